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
#: Which network interfaces Open MPI's TCP endpoints (the ``tcp`` BTL, the runtime's ``oob``, UCX's
#: TCP transport) advertise and use. Without ``$MPISTAGE_INTERFACES``: loopback only, IPv4 only
#: (a single-node deployment: :data:`LOOPBACK_DEFAULTS`). ``$MPISTAGE_INTERFACES=eth0,ib0`` (names or
#: CIDR ranges, as Open MPI's ``*_if_include`` take them): those, for the BTL and the oob (UCX is then
#: left to ``$UCX_NET_DEVICES``). ``all``: Open MPI's own choice, every interface. A job that spans
#: nodes needs one of the latter two (docs/security.md).
INTERFACES_ENV = "MPISTAGE_INTERFACES"
ALL_INTERFACES = "all"
INTERFACE_VARIABLES: tuple[str, ...] = ("OMPI_MCA_btl_tcp_if_include", "OMPI_MCA_oob_tcp_if_include")
LOOPBACK_DEFAULTS: dict[str, str] = {
    **dict.fromkeys(INTERFACE_VARIABLES, "lo"),
    "OMPI_MCA_btl_tcp_disable_family": "6",
    "OMPI_MCA_oob_tcp_disable_ipv6_family": "1",
    "UCX_NET_DEVICES": "lo",
}
#: Environment variables that ``mpiexec`` sets in every process it starts: when none is set, the
#: process is a singleton (started without ``mpiexec``).
MPIEXEC_ENV_MARKERS: tuple[str, ...] = ("OMPI_COMM_WORLD_SIZE", "PMIX_RANK")


def apply_defaults(env: dict[str, str] | os._Environ = os.environ) -> dict[str, str]:
    """Set the Open MPI defaults in ``env`` where unset (with the interfaces ``env`` names in
    ``$MPISTAGE_INTERFACES``); returns ``env``."""
    wanted = dict(OPEN_MPI_DEFAULTS)
    if os.geteuid() == 0:
        wanted.update(ROOT_DEFAULTS)
    interfaces = env.get(INTERFACES_ENV)
    if not interfaces:
        wanted.update(LOOPBACK_DEFAULTS)
    elif interfaces != ALL_INTERFACES:
        wanted.update(dict.fromkeys(INTERFACE_VARIABLES, interfaces))
    for name, value in wanted.items():
        env.setdefault(name, value)
    return env


_MPI: ModuleType | None = None


def mpi() -> ModuleType:
    """``mpi4py.MPI``, imported after the defaults are in place (MPI initializes on import).
    Cheap after the first call (hot paths call it): the module is kept."""
    global _MPI
    if _MPI is None:
        apply_defaults()
        import mpi4py

        mpi4py.rc.thread_level = "multiple"
        from mpi4py import MPI

        _MPI = MPI
    return _MPI
