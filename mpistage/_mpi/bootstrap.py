"""How a client process finds the servers (docs/protocol.md, "Session setup"): one
:class:`Bootstrap` per way, tried in the order of :data:`BOOTSTRAPS`; the first that applies
opens the link.

* explicit address: ``Client(address=path)``: connect through that connection file;
* spawned: a job the launcher started with ``MPI_Comm_spawn`` (``MPISTAGE_SPAWNED=1`` and a
  parent intercommunicator, whose remote rank ``i`` is shard ``i``);
* MPMD: ``mpiexec -n S mpistage-server : -n N python app.py``: one world, split by role;
* ``$MPISTAGE_ADDRESS``: connect through the connection file it names.

Adding a way is one class here and one place in the tuple. ``applies`` must not start MPI where
the strategy cannot apply (a singleton must set its Open MPI environment first).

Server ranks that a driver spawned (the launcher's database) keep the other end of the spawned
slot: the driver holds their parent intercommunicator and stops them through it
(:func:`send_parent_stop`, :func:`parent_stop_arrived`; docs/launcher.md, "The database").
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np

from ..errors import ServerUnreachableError
from ..mpienv import mpi
from ..protocol import PURPOSE_CLIENT, ROLE_APP, WIDEN_TAG
from .connection import ServerConnection
from .connfile import ADDRESS_ENV, Address, connect_lock, launched_by_mpiexec, prepare_singleton, read_address
from .links import (
    ADMITTED,
    Link,
    LinkKind,
    is_mpmd_app,
    say_connect_hello,
    say_hello,
    setup_client_side,
    split_world,
)

SPAWNED_ENV = "MPISTAGE_SPAWNED"  # "1" in the environment of a job the launcher spawned
#: The tag of the stop a driver sends the server ranks it spawned, on their parent intercommunicator
#: (nothing else travels there, so it cannot meet the servers' request tags).
PARENT_STOP_TAG = 4250


@dataclass
class Session:
    """An opened link and the communicator of this job's application ranks."""

    link: Link
    app_comm: Any


class Bootstrap(Protocol):
    """One way for a client job to find the servers."""

    kind: ClassVar[LinkKind]

    def applies(self, address: str | None) -> bool:
        """Whether this way is the one to take (``address``: what ``Client`` was given)."""

    def open(self, address: str | None, comm: Any) -> Session:
        """Collective over the application ranks: find the servers, say hello, set the link up."""


def connect(address: Address, comm: Any, purpose: int = PURPOSE_CLIENT) -> Any | None:
    """Collective over ``comm``: connect to the servers; returns the intercommunicator whose
    remote rank ``i`` is shard ``i`` (None after an admitted stop hello). Call it inside
    :func:`connect_lock`. Raises :class:`ServerUnreachableError` when shard 0 refuses the hello
    (a wrong secret, a stop it does not allow). A stop or re-arm hello ends at its verdict (None).

    Only shard 0 accepts (``MPI_Comm_accept`` on ``MPI_COMM_SELF``: a collective accept keeps
    every other shard's accept thread spinning, a core each); after the hello and its verdict, the
    job and the servers widen the link with ``MPI_Intercomm_create`` over the shard-0 link
    (docs/protocol.md)."""
    MPI = mpi()
    try:
        first = comm.Connect(address.port, MPI.INFO_NULL, 0)
    except MPI.Exception as exc:
        raise ServerUnreachableError(f"MPI_Comm_connect to {address.port!r} failed: {exc}") from exc
    code, reason = say_connect_hello(first, comm, purpose, address.secret)
    if code != ADMITTED:
        first.Free()  # not Disconnect: shard 0 has let go of it already
        raise ServerUnreachableError(f"the servers refused this job: {reason}")
    if purpose != PURPOSE_CLIENT:
        first.Free()
        return None
    bridge = first.Merge(True)
    inter = comm.Create_intercomm(0, bridge, 0, WIDEN_TAG)
    bridge.Free()
    first.Free()
    return inter


def send_parent_stop(inter: Any) -> None:
    """Driver side: tell every server rank spawned on ``inter`` (the intercommunicator
    ``MPI_Comm_spawn`` returned) to stop; a one-int message each, so it returns at once."""
    stop = np.ones(1, np.int32)
    for rank in range(inter.Get_remote_size()):
        inter.Send(stop, dest=rank, tag=PARENT_STOP_TAG)


def parent_stop_arrived(parent: Any) -> bool:
    """Server side (``parent`` = ``MPI_Comm_get_parent``): whether the driver's stop has come; receives it."""
    if not parent.Iprobe(source=0, tag=PARENT_STOP_TAG):
        return False
    parent.Recv(np.empty(1, np.int32), source=0, tag=PARENT_STOP_TAG)
    return True


@contextmanager
def signals_deferred() -> Iterator[None]:
    """SIGTERM and SIGINT that arrive inside the block take effect when it ends (main thread only;
    entered once this job holds the connect lock).

    Session setup is a run of collective calls with every shard: a process killed in the middle
    leaves the servers waiting for it until they abandon the attempt (``--setup-timeout``), and
    the jobs queued behind it wait as long. A launcher's stop or timeout (SIGTERM, SIGKILL only
    later) therefore lets the connect finish first (docs/launcher.md)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, _frame: caught.append(signum))
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        if caught:
            signal.raise_signal(caught[0])


def open_address(path: str, comm: Any) -> Session:
    """Connect through the connection file at ``path`` (collective over ``comm``, default
    ``MPI_COMM_WORLD``). When the servers are not what the file says, the session is still
    completed and closed (the servers stay able to take the next job) before the error is raised."""
    address = read_address(path)
    prepare_singleton(address)
    comm = comm if comm is not None else mpi().COMM_WORLD
    with connect_lock(path, comm), signals_deferred():  # waiting for the lock stays interruptible
        link = setup_client_side(connect(address, comm), LinkKind.CONNECT)
    found = link.inter.Get_remote_size()
    if found != address.shards:
        ServerConnection(link, comm).close()
        raise ServerUnreachableError(
            f"connected to {found} server ranks, the connection file {path} says {address.shards}")
    return Session(link, comm)


class ExplicitAddress:
    """``Client(address=path)``."""

    kind = LinkKind.CONNECT

    def applies(self, address: str | None) -> bool:
        return address is not None

    def open(self, address: str | None, comm: Any) -> Session:
        assert address is not None
        return open_address(address, comm)


class Spawned:
    """A job spawned by the launcher: the parent intercommunicator is the link."""

    kind = LinkKind.SPAWN

    def applies(self, address: str | None) -> bool:
        return os.environ.get(SPAWNED_ENV) == "1" and mpi().Comm.Get_parent() != mpi().COMM_NULL

    def open(self, address: str | None, comm: Any) -> Session:
        MPI = mpi()
        parent = MPI.Comm.Get_parent()
        say_hello(parent)
        return Session(setup_client_side(parent, LinkKind.SPAWN), MPI.COMM_WORLD)


class Mpmd:
    """The application part of an MPMD launch: split the world by role (once: the servers split
    it once, so a rank that said goodbye cannot join again)."""

    kind = LinkKind.MPMD

    def __init__(self) -> None:
        self.split_done = False

    def applies(self, address: str | None) -> bool:
        return launched_by_mpiexec() and is_mpmd_app()

    def open(self, address: str | None, comm: Any) -> Session:
        if self.split_done:
            raise ServerUnreachableError("this rank has already said goodbye to the MPMD servers")
        self.split_done = True
        split = split_world(ROLE_APP)
        if split.remote is None:
            raise ServerUnreachableError("this MPMD job has no server ranks")
        say_hello(split.remote)
        return Session(setup_client_side(split.remote, LinkKind.MPMD), split.local)


class EnvAddress:
    """``$MPISTAGE_ADDRESS`` names a connection file (ignored in an MPMD job: MPMD comes first)."""

    kind = LinkKind.CONNECT

    def applies(self, address: str | None) -> bool:
        return bool(os.environ.get(ADDRESS_ENV))

    def open(self, address: str | None, comm: Any) -> Session:
        return open_address(os.environ[ADDRESS_ENV], comm)


#: The ways to find the servers, in the order they are tried.
BOOTSTRAPS: tuple[Bootstrap, ...] = (ExplicitAddress(), Spawned(), Mpmd(), EnvAddress())

NO_SERVERS = ("no servers: start this program after the servers in one MPMD job "
              "(mpiexec -n 2 mpistage-server : -n 4 python app.py), or set MPISTAGE_ADDRESS")


def open_session(address: str | None, comm: Any) -> Session:
    """The first applicable :data:`BOOTSTRAPS` strategy's session; raises
    :class:`ServerUnreachableError` when none applies or the servers cannot be reached."""
    for bootstrap in BOOTSTRAPS:
        if bootstrap.applies(address):
            return bootstrap.open(address, comm)
    raise ServerUnreachableError(NO_SERVERS)
