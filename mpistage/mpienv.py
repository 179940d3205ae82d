"""Open MPI settings that these machines need, applied where the user has not set them.

Must run before MPI is initialized (that is, before ``from mpi4py import MPI``); every
mpistage module that needs MPI imports it through :func:`mpi`.
"""

from __future__ import annotations

import os
from types import ModuleType

#: Settings found by trying (see docs/mpi.md). Each is applied only when unset.
OPEN_MPI_DEFAULTS: dict[str, str] = {
    "OMPI_MCA_rmaps_base_oversubscribe": "1",
    "OMPI_MCA_hwloc_base_binding_policy": "none",
    "OMPI_MCA_osc": "ucx",
    "OMPI_MCA_osc_ucx_tls": "any",
}
ROOT_DEFAULTS: dict[str, str] = {
    "OMPI_ALLOW_RUN_AS_ROOT": "1",
    "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
}
#: Environment variables that ``mpiexec`` sets in every process it starts: when none is set, the
#: process is a singleton (started without ``mpiexec``).
MPIEXEC_ENV_MARKERS: tuple[str, ...] = ("OMPI_COMM_WORLD_SIZE", "PMIX_RANK")


def apply_defaults(env: dict[str, str] | os._Environ = os.environ) -> dict[str, str]:
    """Set the Open MPI defaults in ``env`` where unset; returns ``env``."""
    wanted = dict(OPEN_MPI_DEFAULTS)
    if os.geteuid() == 0:
        wanted.update(ROOT_DEFAULTS)
    for name, value in wanted.items():
        env.setdefault(name, value)
    return env


def mpi() -> ModuleType:
    """``mpi4py.MPI``, imported after the defaults are in place (MPI initializes on import)."""
    apply_defaults()
    import mpi4py

    mpi4py.rc.thread_level = "multiple"
    from mpi4py import MPI

    return MPI
