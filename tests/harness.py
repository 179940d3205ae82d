"""Runs MPI scenarios for the tests: each one a subprocess in its own process group, bounded by a
timeout; on timeout the whole group is killed and the test fails with what the job printed."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from mpistage.jobs import JobTimeout, run_bounded, server_command

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = Path(__file__).resolve().parent / "scenarios"
PYTHON = sys.executable


def run(cmd: Sequence[str], timeout: float = 120, env: dict[str, str] | None = None,
        check: bool = True, cwd: str | os.PathLike[str] | None = None) -> subprocess.CompletedProcess:
    """Run ``cmd``; kill its process group and fail on timeout; fail on a non-zero exit if ``check``."""
    try:
        result = run_bounded(cmd, timeout, env, cwd)
    except JobTimeout as exc:
        raise AssertionError(str(exc)) from None
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}: {' '.join(map(str, cmd))}\n{result.stdout}")
    return result


def script(app: str | os.PathLike[str]) -> str:
    """A scenario file name under tests/scenarios, or a path, as an absolute path."""
    path = Path(app)
    return str(path if path.is_absolute() else SCENARIOS / path)


def run_mpmd(app: str | os.PathLike[str], servers: int = 1, clients: int = 1,
             server_args: Sequence[str] = (), app_args: Sequence[str] = (), timeout: float = 120,
             check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``mpiexec -n servers mpistage-server ARGS : -n clients python APP ARGS``."""
    cmd = ["mpiexec", "-n", str(servers), *server_command(), *server_args,
           ":", "-n", str(clients), PYTHON, script(app), *app_args]
    return run(cmd, timeout, env, check)


class StartedServers:
    """Servers started with ``mpistage start`` in a temporary directory (connect mode)."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir
        self.address = run_dir / "address"

    def client_env(self) -> dict[str, str]:
        return {"MPISTAGE_ADDRESS": str(self.address)}

    def run_client(self, app: str | os.PathLike[str], clients: int = 1, app_args: Sequence[str] = (),
                   timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        """A client job under mpiexec (``mpistage run``)."""
        cmd = [PYTHON, "-m", "mpistage.cli", "run", "--dir", self.dir, "-n", str(clients), "--",
               PYTHON, script(app), *app_args]
        return run(cmd, timeout, check=check)

    def run_singleton(self, app: str | os.PathLike[str], app_args: Sequence[str] = (),
                      timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
        """A client process started without mpiexec (as a notebook would be)."""
        return run([PYTHON, script(app), *app_args], timeout, self.client_env(), check)

    def server_log(self) -> str:
        log = self.dir / "server.log"
        return log.read_text() if log.exists() else ""


@contextmanager
def started_servers(shards: int = 1, server_args: Sequence[str] = (),
                    timeout: float = 60) -> Iterator[StartedServers]:
    """Start servers (and ompi-server) for the duration of the block, then stop them."""
    with tempfile.TemporaryDirectory(prefix="mpistage-test-") as tmp:
        servers = StartedServers(Path(tmp))
        cli = [PYTHON, "-m", "mpistage.cli"]
        run([*cli, "start", "--shards", str(shards), "--dir", tmp,
             "--server-args", " ".join(server_args)], timeout)
        try:
            yield servers
        finally:
            stopped = run([*cli, "stop", "--dir", tmp], timeout, check=False)
        assert stopped.returncode == 0, f"servers did not stop cleanly: {stopped.stdout}\n{servers.server_log()}"
