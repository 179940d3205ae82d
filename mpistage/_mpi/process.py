"""The one connection a process holds to the servers, shared by all its ``Client`` objects, and the
application communicator it hands back in MPMD mode. Says goodbye at interpreter exit."""

from __future__ import annotations

import atexit
import threading
from typing import Any

from ..mpienv import mpi
from .bootstrap import open_session
from .connection import ServerConnection
from .links import is_mpmd_app

_lock = threading.Lock()
_connection: ServerConnection | None = None
_app_comm: Any = None


def get_connection(address: str | None = None, comm: Any = None) -> ServerConnection:
    """This process's connection, opened on first use by the first bootstrap that applies
    (``bootstrap.BOOTSTRAPS``; collective over the application ranks: the MPMD world split, or
    ``MPI_Comm_connect`` over ``comm``, default ``MPI_COMM_WORLD``). Raises ServerUnreachableError."""
    global _connection, _app_comm
    with _lock:
        if _connection is None or _connection.closed:
            session = open_session(address, comm)
            _connection = ServerConnection(session.link, session.app_comm)
            _app_comm = session.app_comm
            atexit.register(close_connection)
        return _connection


def app_comm() -> Any:
    """The application's communicator: in MPMD mode the world without the server ranks (use it
    for the application's own collectives); otherwise the communicator the job connected over
    (``MPI_COMM_WORLD`` unless ``Client(comm=...)`` said otherwise)."""
    if _app_comm is None and is_mpmd_app():
        get_connection()
    return _app_comm if _app_comm is not None else mpi().COMM_WORLD


def close_connection() -> None:
    """Say goodbye to the servers and release the link (collective over the application ranks);
    a later ``Client()`` connects again, except in an MPMD job (ServerUnreachableError)."""
    with _lock:
        if _connection is not None and not _connection.closed:
            _connection.close()
