"""How a client process finds the servers (docs/protocol.md, "Session setup").

* MPMD: ``mpiexec -n S mpistage-server : -n N python app.py``: one world, split by role.
* connect: the servers write a connection file; a client job ``MPI_Comm_connect``s to its port.
* spawned (ensemble members): the parent intercommunicator (see the launcher).
"""

from __future__ import annotations

from typing import Any

from ..errors import ServerUnreachableError
from ..mpienv import mpi
from ..protocol import PURPOSE_STOP, WIDEN_TAG
from .connfile import Address
from .links import say_hello


def connect(address: Address, comm: Any, purpose: int = 0) -> Any | None:
    """Collective over ``comm``: connect to the servers; returns the intercommunicator whose
    remote rank ``i`` is shard ``i`` (None after a stop hello). Call it inside :func:`connect_lock`.

    Only shard 0 accepts (``MPI_Comm_accept`` on ``MPI_COMM_SELF``: a collective accept keeps
    every other shard's accept thread spinning, a core each); after the hello, the job and the
    servers widen the link with ``MPI_Intercomm_create`` over the shard-0 link (docs/protocol.md)."""
    MPI = mpi()
    try:
        first = comm.Connect(address.port, MPI.INFO_NULL, 0)
    except MPI.Exception as exc:
        raise ServerUnreachableError(f"MPI_Comm_connect to {address.port!r} failed: {exc}") from exc
    say_hello(first, purpose)
    if purpose == PURPOSE_STOP:
        first.Disconnect()
        return None
    bridge = first.Merge(True)
    inter = comm.Create_intercomm(0, bridge, 0, WIDEN_TAG)
    bridge.Free()
    first.Free()
    if inter.Get_remote_size() != address.shards:
        raise ServerUnreachableError(
            f"connected to {inter.Get_remote_size()} server ranks, the address says {address.shards}")
    return inter
