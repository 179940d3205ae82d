"""The one connection a process holds to the servers, shared by all its ``Client`` objects, and the
application communicator it hands back in MPMD mode. Says goodbye at interpreter exit."""

from __future__ import annotations

import atexit
import os
import threading
from typing import Any

from ..errors import ServerUnreachableError
from ..mpienv import mpi
from ..protocol import ROLE_APP
from .bootstrap import connect
from .connection import ServerConnection
from .connfile import ADDRESS_ENV, connect_lock, launched_by_mpiexec, prepare_singleton, read_address
from .links import LinkKind, is_mpmd_app, say_hello, setup_client_side, split_world

_lock = threading.Lock()
_connection: ServerConnection | None = None
_app_comm: Any = None
_mpmd_done = False


def _open(address: str | None, comm: Any) -> ServerConnection:
    """Connect when given an address; else join the MPMD world when this program is not the first
    of an MPMD launch (a stray ``MPISTAGE_ADDRESS`` must not split such a job); else connect
    to ``$MPISTAGE_ADDRESS``."""
    global _app_comm
    if address is None and not (launched_by_mpiexec() and is_mpmd_app()):
        address = os.environ.get(ADDRESS_ENV)
    if address is not None:
        addr = read_address(address)
        prepare_singleton(addr)
        MPI = mpi()
        comm = comm if comm is not None else MPI.COMM_WORLD
        with connect_lock(address, comm):
            link = setup_client_side(connect(addr, comm), LinkKind.CONNECT)
        return ServerConnection(link, comm)
    if not is_mpmd_app():
        raise ServerUnreachableError(
            "no servers: start this program after the servers in one MPMD job "
            "(mpiexec -n 2 mpistage-server : -n 4 python app.py), or set MPISTAGE_ADDRESS")
    if _mpmd_done:
        raise ServerUnreachableError("this rank has already said goodbye to the MPMD servers")
    split = split_world(ROLE_APP)
    if split.remote is None:
        raise ServerUnreachableError("this MPMD job has no server ranks")
    _app_comm = split.local
    say_hello(split.remote)
    return ServerConnection(setup_client_side(split.remote, LinkKind.MPMD), split.local)


def get_connection(address: str | None = None, comm: Any = None) -> ServerConnection:
    """This process's connection, opened on first use (collective over the application ranks:
    the MPMD world split, or ``MPI_Comm_connect`` over ``comm``, default ``MPI_COMM_WORLD``)."""
    global _connection
    with _lock:
        if _connection is None or _connection.closed:
            _connection = _open(address, comm)
            atexit.register(close_connection)
        return _connection


def app_comm() -> Any:
    """The application's communicator: in MPMD mode the world without the server ranks (use it
    for the application's own collectives); otherwise ``MPI_COMM_WORLD``."""
    if _app_comm is None and is_mpmd_app():
        get_connection()
    return _app_comm if _app_comm is not None else mpi().COMM_WORLD


def close_connection() -> None:
    """Say goodbye to the servers and release the link (collective over the application ranks)."""
    global _mpmd_done
    with _lock:
        if _connection is not None and not _connection.closed:
            _mpmd_done = _connection.link.kind == LinkKind.MPMD
            _connection.close()
