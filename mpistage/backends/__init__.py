"""Staging backends under :class:`mpistage.Client`, chosen in one place (:func:`open_backend`).

A backend is a module with a factory ``create(address, comm) -> Backend`` (see ``base.py`` for the
store and engine halves) and one entry in :data:`BACKENDS`. ``Client(backend=...)`` names one (or
passes a :class:`Backend` object); otherwise the connection file's ``"backend"`` field does
(``Client(address=...)``, else ``$MPISTAGE_ADDRESS`` outside an MPMD job), else "mpi".
"""

from __future__ import annotations

import os
from typing import Any

from .._mpi.connfile import ADDRESS_ENV, DEFAULT_BACKEND, backend_named_in, launched_by_mpiexec
from .._mpi.links import is_mpmd_app
from ..errors import BadArgumentError
from . import adios2_config, inprocess, mpi
from .base import Backend, BackendFactory, EngineBackend, ModelSpec, RunHandle, StoreBackend

#: Backend name -> factory.
BACKENDS: dict[str, BackendFactory] = {
    "mpi": mpi.create,
    "inprocess": inprocess.create,
    "adios2": adios2_config.create,  # imports adios2 only when opened
}


def backend_name(address: str | None) -> str:
    """The backend a ``Client`` without ``backend=`` uses: the one its connection file names."""
    path = address
    if path is None:
        path = os.environ.get(ADDRESS_ENV) or None
        if path is not None and launched_by_mpiexec() and is_mpmd_app():
            return DEFAULT_BACKEND  # an MPMD job ignores a stray $MPISTAGE_ADDRESS
    return backend_named_in(path) if path is not None else DEFAULT_BACKEND


def open_backend(backend: str | Backend | None = None, address: str | None = None,
                 comm: Any = None) -> Backend:
    """The backend a ``Client`` stages through: ``backend`` itself when it is a
    :class:`Backend`, else the factory of its name (by default :func:`backend_name`). Raises
    BadArgumentError for an unknown name, and what the factory raises (ServerUnreachableError)."""
    if isinstance(backend, Backend):
        return backend
    name = backend_name(address) if backend is None else backend
    factory = BACKENDS.get(name)
    if factory is None:
        raise BadArgumentError(f"unknown backend {name!r}; known: {', '.join(sorted(BACKENDS))}")
    return factory(address, comm)


__all__ = ["BACKENDS", "Backend", "BackendFactory", "EngineBackend", "ModelSpec", "RunHandle",
           "StoreBackend", "backend_name", "open_backend"]
