"""Processes that connect to the servers' own port, which a server cannot do itself (``MPI_Comm_accept``
cannot be interrupted, and a server connecting to its own port hangs Open MPI):

* the **stop** connection at shutdown: server rank 0 starts a one-shot process that connects like a
  client job but says "stop" in its hello; the accept thread admits that hello only once the server
  itself has decided to stop (docs/security.md);
* the **re-arm** connection while idle: on Open MPI 4 an ``MPI_Comm_accept`` that waits about 5 min
  fails (a PMIx lookup times out) and every accept after it fails too, so no job can connect again.
  :class:`AcceptRearmer` connects every ``--accept-rearm`` seconds with a "re-arm" hello, which
  shard 0 answers and lets go, so no accept ever waits that long.

    python -m mpistage.server.wake [--rearm] ADDRESS_FILE
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

from ..mpienv import apply_defaults
from .links import STOP_ALLOWED

DEFAULT_REARM_SECONDS = 120.0  # well under the ~300 s after which an idle accept fails
LOG_FIRST_REARMS = 3


def _connect_process(address: str, timeout: float, *flags: str) -> tuple[bool, str]:
    """Run this module's connection in a fresh process (not part of this MPI job)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMIX_", "OPAL_"))}
    apply_defaults(env)
    try:
        done = subprocess.run([sys.executable, "-m", "mpistage.server.wake", *flags, address], env=env,
                              timeout=timeout, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except subprocess.TimeoutExpired:
        return False, f"no answer within {timeout} s"
    return done.returncode == 0, done.stdout


def wake_accept_threads(address: str, timeout: float = 30.0) -> bool:
    """Run the stop connection; True on success. Only from here does this server's accept thread
    admit a stop hello (``links.STOP_ALLOWED``); the wake process presents the deployment secret
    from the connection file, as clients do."""
    STOP_ALLOWED.set()
    ok, output = _connect_process(address, timeout)
    if not ok:
        print(f"mpistage-server: could not wake the accept threads:\n{output}", file=sys.stderr)
    return ok


class AcceptRearmer:
    """Shard 0's keep-alive of its accept: a re-arm connection every ``interval`` seconds until
    :meth:`stop`. A re-arm that fails is logged; the next one is tried at its time."""

    def __init__(self, address: str, interval: float = DEFAULT_REARM_SECONDS) -> None:
        self.address, self.interval = address, interval
        self.rearms = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mpistage-rearm", daemon=True)

    def start(self) -> None:
        print(f"mpistage-server shard 0: re-arming the accept every {self.interval:g} s", file=sys.stderr, flush=True)
        self._thread.start()

    def stop(self) -> None:
        """No re-arm after this returns (one in progress is waited for)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            ok, output = _connect_process(self.address, max(30.0, self.interval), "--rearm")
            if not ok:
                print(f"mpistage-server shard 0: re-arming the accept failed:\n{output}", file=sys.stderr, flush=True)
                continue
            self.rearms += 1
            if self.rearms <= LOG_FIRST_REARMS:
                print(f"mpistage-server shard 0: re-armed the accept ({self.rearms})", file=sys.stderr, flush=True)


def main() -> None:
    from .._mpi.bootstrap import connect
    from .._mpi.connfile import connect_lock, prepare_singleton, read_address
    from ..mpienv import mpi
    from ..protocol import PURPOSE_REARM, PURPOSE_STOP

    rearm = sys.argv[1] == "--rearm"
    path = sys.argv[-1]
    address = read_address(path)
    prepare_singleton(address)
    MPI = mpi()
    with connect_lock(path, MPI.COMM_SELF):
        connect(address, MPI.COMM_SELF, PURPOSE_REARM if rearm else PURPOSE_STOP)


if __name__ == "__main__":
    main()
