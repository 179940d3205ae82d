"""Wakes the servers' accept threads at shutdown: ``MPI_Comm_accept`` cannot be interrupted, and a
server cannot connect to its own port (Open MPI hangs), so server rank 0 starts this one-shot
process, which connects like a client job but says "stop" in its hello. The accept thread admits
that hello only once the server itself has decided to stop (docs/security.md).

    python -m mpistage.server.wake ADDRESS_FILE
"""

from __future__ import annotations

import os
import subprocess
import sys

from ..mpienv import apply_defaults
from .links import STOP_ALLOWED


def wake_accept_threads(address: str, timeout: float = 30.0) -> bool:
    """Run the stop connection in a fresh process (not part of this MPI job); True on success.
    Only from here does this server's accept thread admit a stop hello (``links.STOP_ALLOWED``);
    the wake process presents the deployment secret from the connection file, as clients do."""
    STOP_ALLOWED.set()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMIX_", "OPAL_"))}
    apply_defaults(env)
    try:
        done = subprocess.run([sys.executable, "-m", "mpistage.server.wake", address], env=env,
                              timeout=timeout, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except subprocess.TimeoutExpired:
        return False
    if done.returncode:
        print(f"mpistage-server: could not wake the accept threads:\n{done.stdout}", file=sys.stderr)
    return done.returncode == 0


def main() -> None:
    from .._mpi.bootstrap import connect
    from .._mpi.connfile import connect_lock, prepare_singleton, read_address
    from ..mpienv import mpi
    from ..protocol import PURPOSE_STOP

    path = sys.argv[1]
    address = read_address(path)
    prepare_singleton(address)
    MPI = mpi()
    with connect_lock(path, MPI.COMM_SELF):
        connect(address, MPI.COMM_SELF, PURPOSE_STOP)


if __name__ == "__main__":
    main()
