"""Starting MPI jobs from Python: the environment Open MPI needs here, the server ranks' command
line, and a bounded run that kills its whole process group (what the CLI, the launcher, the tests
and the benchmarks all use)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from .mpienv import apply_defaults


class JobTimeout(RuntimeError):
    """A bounded job ran past its timeout; its process group was killed. ``output`` is what it
    printed (when it was captured)."""

    def __init__(self, cmd: Sequence[str], timeout: float, output: str) -> None:
        super().__init__(f"timed out after {timeout} s: {' '.join(map(str, cmd))}\n{output}")
        self.output = output


def mpi_environ(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment with the Open MPI defaults mpistage needs, plus ``extra``."""
    env = apply_defaults(dict(os.environ))
    env.update(extra or {})
    return env


def server_command() -> list[str]:
    """The command that starts one server rank (``mpistage-server`` beside this Python)."""
    exe = shutil.which("mpistage-server", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "mpistage.server"]


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group that ``proc`` leads (started with ``start_new_session``)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_bounded(cmd: Sequence[str], timeout: float, env: Mapping[str, str] | None = None,
                cwd: str | os.PathLike[str] | None = None, capture: bool = True) -> subprocess.CompletedProcess:
    """Run ``cmd`` in its own process group with the MPI environment (plus ``env``); on timeout
    kill the whole group and raise :class:`JobTimeout`. With ``capture``, stdout and stderr come
    back together as ``stdout``; otherwise they go to this process's."""
    pipe = subprocess.PIPE if capture else None
    proc = subprocess.Popen(list(map(str, cmd)), stdout=pipe, stderr=subprocess.STDOUT if capture else None,
                            text=True, env=mpi_environ(env), cwd=cwd, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, _ = proc.communicate()
        raise JobTimeout(cmd, timeout, out or "") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out or "", "")
