"""How client ranks and server ranks find each other.

Every mode ends in the same thing: an intercommunicator whose remote rank ``i`` is shard ``i``
(seen from a client), or whose remote group is one client job (seen from a server).

* MPMD: ``mpiexec -n S mpistage-server : -n N python app.py``: one world, split by role.
* connect: the servers write a connection file; a client job ``MPI_Comm_connect``s to its port.
* spawned (ensemble members): the parent intercommunicator (see the launcher).
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ServerUnreachableError
from .mpienv import MPIEXEC_ENV_MARKERS, mpi
from .protocol import (
    INTERCOMM_TAG,
    PROTOCOL_VERSION,
    PURPOSE_CLIENT,
    PURPOSE_STOP,
    ROLE_SERVER,
    WIDEN_TAG,
)

ADDRESS_ENV = "MPISTAGE_ADDRESS"


@dataclass
class WorldSplit:
    """The result of splitting ``MPI_COMM_WORLD`` by role in an MPMD job."""

    local: Any  # the intracommunicator of this rank's role
    remote: Any | None  # intercommunicator to the other role (None when it has no ranks)
    nservers: int
    napps: int


def split_world(role: int) -> WorldSplit:
    """Collective over ``MPI_COMM_WORLD``: every rank, server or application, calls it once."""
    MPI = mpi()
    import numpy as np

    world = MPI.COMM_WORLD
    local = world.Split(role, world.Get_rank())
    roles = np.empty(world.Get_size(), dtype=np.int32)
    world.Allgather(np.array([role], dtype=np.int32), roles)
    other = [r for r, x in enumerate(roles) if x != role]
    nservers = int((roles == ROLE_SERVER).sum())
    remote = None
    if other:
        remote = local.Create_intercomm(0, world, other[0], INTERCOMM_TAG)
    return WorldSplit(local, remote, nservers, world.Get_size() - nservers)


def is_mpmd_app() -> bool:
    """True in the application part of an MPMD launch (its ``MPI_APPNUM`` is 1 or more)."""
    appnum = mpi().COMM_WORLD.Get_attr(mpi().APPNUM)
    return appnum is not None and appnum >= 1


# ---------------------------------------------------------------- connection files

@dataclass(frozen=True)
class Address:
    """What a connection file says: where the servers listen and how many shards they are."""

    port: str
    shards: int
    protocol: int
    ompi_server_uri: str | None = None

    def to_json(self) -> str:
        return json.dumps({"port": self.port, "shards": self.shards, "protocol": self.protocol,
                           "ompi_server_uri": self.ompi_server_uri}, indent=1)


def write_address(path: str | os.PathLike[str], address: Address) -> None:
    """Write the connection file atomically, readable by its owner only (mode 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".mpistage-address-")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(address.to_json())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_address(path: str | os.PathLike[str]) -> Address:
    """Parse a connection file; raises :class:`ServerUnreachableError` when it is unusable."""
    try:
        data = json.loads(Path(path).read_text())
        address = Address(str(data["port"]), int(data["shards"]), int(data["protocol"]),
                          data.get("ompi_server_uri"))
    except FileNotFoundError as exc:
        raise ServerUnreachableError(f"no connection file at {path}: are the servers running?") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise ServerUnreachableError(f"{path} is not an mpistage connection file: {exc}") from exc
    if address.protocol != PROTOCOL_VERSION:
        raise ServerUnreachableError(
            f"servers speak protocol {address.protocol}, this client speaks {PROTOCOL_VERSION}")
    return address


def launched_by_mpiexec() -> bool:
    """True when ``mpiexec`` started this process (as opposed to a singleton)."""
    return any(name in os.environ for name in MPIEXEC_ENV_MARKERS)


def prepare_singleton(address: Address) -> None:
    """Let a process started without ``mpiexec`` connect: point Open MPI at the ``ompi-server``
    named in the connection file. Only has an effect before MPI is initialized."""
    if address.ompi_server_uri and not launched_by_mpiexec():
        os.environ.setdefault("OMPI_MCA_pmix_server_uri", f"file:{address.ompi_server_uri}")


@contextmanager
def connect_lock(address_path: str | os.PathLike[str], comm: Any) -> Iterator[None]:
    """Held by the connecting job's rank 0 from ``MPI_Comm_connect`` to the end of session setup.

    Open MPI 4.1 pairs up two jobs that connect to one port at the same moment wrongly (both
    hang), so connections are serialized with ``flock`` on ``<address>.lock`` next to the file."""
    if comm.Get_rank() != 0:
        yield
        return
    with open(f"{address_path}.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


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


# ---------------------------------------------------------------- session setup (every mode)



@dataclass
class Link:
    """What both sides hold after setup: the intercommunicator, its merged intracommunicator
    and the one-sided window (servers expose ``slot_bytes`` per client rank; clients expose 0)."""

    inter: Any
    merged: Any
    window: Any
    slot_bytes: int


def say_hello(inter: Any, purpose: int = PURPOSE_CLIENT) -> None:
    """The client group's hello: ``int32[2] = {protocol version, purpose}`` from its rank 0."""
    MPI = mpi()
    import numpy as np

    root = MPI.ROOT if inter.Get_rank() == 0 else MPI.PROC_NULL
    inter.Bcast(np.array([PROTOCOL_VERSION, purpose], np.int32), root)


def hear_hello(inter: Any) -> int:
    """The servers' side of :func:`say_hello`; returns the purpose."""
    import numpy as np

    hello = np.zeros(2, np.int32)
    inter.Bcast(hello, 0)
    return int(hello[1])


def setup_client_side(inter: Any) -> Link:
    """Merged communicator and window, collective over the client group and the servers
    (docs/protocol.md, "Session setup"); the hello has been said."""
    MPI = mpi()
    import numpy as np

    merged = inter.Merge(True)
    slot = np.zeros(1, np.int64)
    merged.Bcast(slot, 0)
    window = MPI.Win.Allocate(0, 1, MPI.INFO_NULL, merged)
    return Link(inter, merged, window, int(slot[0]))


def setup_server_side(inter: Any, slot_bytes: int) -> Link:
    """The servers' half of :func:`setup_client_side`."""
    MPI = mpi()
    import numpy as np

    merged = inter.Merge(False)
    merged.Bcast(np.array([slot_bytes], np.int64), 0)
    window = MPI.Win.Allocate(slot_bytes * inter.Get_remote_size(), 1, MPI.INFO_NULL, merged)
    return Link(inter, merged, window, slot_bytes)


def release(link: Link, disconnect: bool) -> None:
    """Free the window and merged communicator, then disconnect (or free) the intercommunicator."""
    link.window.Free()
    link.merged.Free()
    if disconnect:
        link.inter.Disconnect()
    else:
        link.inter.Free()
