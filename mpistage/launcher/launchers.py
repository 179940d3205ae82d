"""How members and the database's server ranks are started: one class per way, the seam where an
``srun`` or Flux launcher goes later. A launcher starts a :class:`Job`, tells whether it has ended
(its exit status) and signals its processes; the experiment does the bookkeeping."""

from __future__ import annotations

import ctypes
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from abc import ABC, abstractmethod
from pathlib import Path

from ..cli import mpi_environ
from .jobs import Job

#: Open MPI settings a spawning driver needs in its environment before MPI is initialized: the
#: experiment's ompi-server (spawned members reach the servers, outside processes reach both) and
#: recovery (without it, one member that crashes or calls MPI_Abort takes every spawned job down).
RECOVERY_ENV = "OMPI_MCA_orte_enable_recovery"
PMIX_URI_ENV = "OMPI_MCA_pmix_server_uri"


def die_with_parent() -> None:
    """``preexec_fn``: the child gets SIGTERM if the driver dies (even by SIGKILL); Linux only."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Launcher(ABC):
    """Starts jobs, polls them, signals them."""

    name = "abstract"

    def __init__(self, uri: Path) -> None:
        self.uri = uri  # the experiment's ompi-server URI file

    @abstractmethod
    def launch(self, job: Job, mpiexec_args: list[str]) -> None:
        """Start ``job`` (``job.command`` with ``job.tasks`` ranks in ``job.run_dir``, ``job.env`` added,
        stdout and stderr to ``job.out`` and ``job.err``); raise on failure to start."""

    @abstractmethod
    def poll(self, job: Job) -> int | None:
        """The job's exit status once every rank has ended (the first non-zero one), else None."""

    @abstractmethod
    def send_signal(self, job: Job, sig: int) -> None:
        """Signal every process of the job that is still there."""

    @abstractmethod
    def alive(self, job: Job) -> bool:
        """Whether any process of the job is still there."""

    def request_stop(self, job: Job) -> None:
        """Ask the job to end cleanly (SIGTERM here; the experiment SIGKILLs it after a bound)."""
        self.send_signal(job, signal.SIGTERM)


class MpiexecLauncher(Launcher):
    """Each member is its own ``mpiexec -n k`` job in connect mode (the CLI's ``mpistage run``
    path): its own process group, killed with the driver (``PR_SET_PDEATHSIG``)."""

    name = "mpiexec"

    def launch(self, job: Job, mpiexec_args: list[str]) -> None:
        env = mpi_environ()
        for name in (RECOVERY_ENV, PMIX_URI_ENV):  # the spawning driver's own settings: with recovery
            env.pop(name, None)                     # on, mpiexec exits 0 when a rank crashes
        env.update(job.env)
        forward = [arg for name in job.env for arg in ("-x", name)]
        cmd = ["mpiexec", "--ompi-server", f"file:{self.uri}", *forward, *mpiexec_args,
               "-n", str(job.tasks), *job.command]
        with open(job.out, "wb") as out, open(job.err, "wb") as err:
            job.handle = subprocess.Popen(cmd, cwd=job.run_dir, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                          env=env, start_new_session=True, preexec_fn=die_with_parent)

    def poll(self, job: Job) -> int | None:
        return job.handle.poll()

    def send_signal(self, job: Job, sig: int) -> None:
        try:
            os.killpg(job.handle.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def request_stop(self, job: Job) -> None:
        """SIGTERM the member's ranks, not its ``mpiexec``: a rank that is connecting to the
        servers defers the signal until its connect is done (``bootstrap.signals_deferred``),
        but an ``mpiexec`` that gets it tears its ranks' runtime down at once, and a connect
        cut there leaves shard 0's accept waiting for ever (Open MPI 4.1). ``mpiexec`` ends
        when its ranks have; without ranks yet, and for the servers' own job, the whole job is
        signalled."""
        ranks = _children(job.handle.pid) if job.connects else []
        if not ranks:
            self.send_signal(job, signal.SIGTERM)
            return
        for pid in ranks:
            try:
                os.kill(pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass

    def alive(self, job: Job) -> bool:
        return job.handle.poll() is None


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from ``/proc``; empty where there is none)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


# Every spawned rank runs this: MPI_Comm_spawn has no output redirection, and the spawned process
# must outlive its program so that a non-zero exit, a crash or a kill reaches Open MPI as a clean
# exit (the status file tells the driver). "$@" is the member's command.
_WRAPPER = """\
exec 2>>"$MPISTAGE_ERR"
r=${OMPI_COMM_WORLD_RANK:-0}
cd "$MPISTAGE_RUN_DIR" || { echo 126 > "$MPISTAGE_STATE/status.$r"; exit 0; }
"$@" >>"$MPISTAGE_OUT" 2>>"$MPISTAGE_ERR" </dev/null &
child=$!
echo $child > "$MPISTAGE_STATE/pid.$r"
wait $child
echo $? > "$MPISTAGE_STATE/status.$r.tmp" && mv "$MPISTAGE_STATE/status.$r.tmp" "$MPISTAGE_STATE/status.$r"
exit 0
"""
LOST_GRACE_SECONDS = 3.0  # a rank whose process is gone without a status file for this long is lost


_SPAWN_LOCK = threading.Lock()  # one spawn at a time in this driver (Spawn blocks the caller)


class SpawnLauncher(Launcher):
    """Each member is one ``MPI_Comm_spawn`` of ``set_tasks`` ranks from the driver (a singleton
    with an ompi-server URI and recovery on; see docs/launcher.md for why both).

    With ``keep_link`` (the database's server ranks) the driver keeps the parent
    intercommunicator and :meth:`request_stop` sends every rank a stop through it
    (:func:`~mpistage._mpi.bootstrap.send_parent_stop`); members' intercommunicators are freed at once."""

    name = "spawn"

    def __init__(self, uri: Path, keep_link: bool = False) -> None:
        super().__init__(uri)
        problem = spawn_environment_problem(uri)
        if problem:
            raise RuntimeError(f"launcher='spawn' cannot run here: {problem}")
        from ..mpienv import mpi

        self.MPI = mpi()
        self.keep_link = keep_link

    def state_dir(self, job: Job) -> Path:
        return job.run_dir / ".mpistage" / job.name

    def launch(self, job: Job, mpiexec_args: list[str]) -> None:
        state = self.state_dir(job)
        state.mkdir(parents=True, exist_ok=True)
        for old in state.iterdir():
            old.unlink()
        job.out.write_bytes(b"")
        job.err.write_bytes(b"")
        env = {**job.env, "MPISTAGE_RUN_DIR": str(job.run_dir), "MPISTAGE_STATE": str(state),
               "MPISTAGE_OUT": str(job.out), "MPISTAGE_ERR": str(job.err)}
        exports = "".join(f"export {name}={shlex.quote(value)}\n" for name, value in env.items())
        with _SPAWN_LOCK:
            inter = self.MPI.COMM_SELF.Spawn("/bin/sh", ["-c", exports + _WRAPPER, "mpistage-member", *job.command],
                                             maxprocs=job.tasks)
            started = inter.Get_remote_size()
            if not self.keep_link or started != job.tasks:
                inter.Free()
                inter = None
        if started != job.tasks:
            raise RuntimeError(f"MPI_Comm_spawn started {started} of {job.tasks} ranks")
        job.handle = {"state": state, "lost_since": {}, "link": inter}

    def request_stop(self, job: Job) -> None:
        """A stop message to every rank through the kept intercommunicator (SIGTERM without one,
        or when sending fails); the link is freed after."""
        inter = job.handle.pop("link", None)  # taken, so that poll() on the monitor thread leaves it alone
        if inter is None:
            super().request_stop(job)
            return
        from .._mpi.bootstrap import send_parent_stop

        try:
            send_parent_stop(inter)
        except self.MPI.Exception as exc:
            job.reason = f"the stop through the spawn link failed ({exc}): SIGTERM"
            super().request_stop(job)
        inter.Free()

    def _release(self, job: Job) -> None:
        """Free a kept link of a job that ended by itself."""
        inter = job.handle.pop("link", None)
        if inter is not None:
            inter.Free()

    def _read(self, job: Job, kind: str) -> dict[int, int]:
        found = {}
        for r in range(job.tasks):
            try:
                found[r] = int((job.handle["state"] / f"{kind}.{r}").read_text())
            except (FileNotFoundError, ValueError):
                continue
        return found

    def poll(self, job: Job) -> int | None:
        status = self._read(job, "status")
        if len(status) < job.tasks:
            pids = self._read(job, "pid")
            now = time.monotonic()
            lost = job.handle["lost_since"]
            for r in range(job.tasks):
                if r not in status and r in pids and not _alive(pids[r]):
                    lost.setdefault(r, now)
            gone = [r for r in range(job.tasks) if r not in status and now - lost.get(r, now) > LOST_GRACE_SECONDS]
            if len(gone) + len(status) < job.tasks or not gone:
                return None
            job.reason = job.reason or f"ranks {gone} ended without an exit status"
            status.update({r: -1 for r in gone})
        self._release(job)
        return next((rc for rc in status.values() if rc != 0), 0)

    def send_signal(self, job: Job, sig: int) -> None:
        for pid in self._read(job, "pid").values():
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def alive(self, job: Job) -> bool:
        return any(_alive(pid) for pid in self._read(job, "pid").values())


def spawn_environment_problem(uri: Path) -> str | None:
    """Why this process cannot spawn members that reach the experiment's servers, or None."""
    if "mpi4py.MPI" in sys.modules and sys.modules["mpi4py.MPI"].Is_initialized():
        if os.environ.get(PMIX_URI_ENV) != f"file:{uri}" or os.environ.get(RECOVERY_ENV) != "1":
            return ("MPI was initialized in this process before the Experiment was created (create the "
                    "Experiment first, or set OMPI_MCA_pmix_server_uri and OMPI_MCA_orte_enable_recovery=1)")
    if os.environ.get(RECOVERY_ENV, "1") != "1":
        return f"{RECOVERY_ENV}={os.environ[RECOVERY_ENV]}: a failing member would take the others down"
    if "OMPI_COMM_WORLD_SIZE" in os.environ:
        return "the driver was started by mpiexec; spawn is supported from a driver started on its own"
    return None


def prepare_spawn_environment(uri: Path) -> None:
    """Set what the spawning driver needs, while MPI is not initialized yet (no effect after)."""
    os.environ.setdefault(PMIX_URI_ENV, f"file:{uri}")
    os.environ.setdefault(RECOVERY_ENV, "1")


def probe_spawn(uri: Path, scratch: Path, timeout: float = 60.0) -> str | None:
    """Spawn one rank of ``python -c 'import mpi4py.MPI'`` once; None when it ran, else why not."""
    try:
        launcher = SpawnLauncher(uri)
    except (RuntimeError, ImportError) as exc:
        return str(exc)
    scratch.mkdir(parents=True, exist_ok=True)
    job = Job("spawn-probe", "probe", scratch, [sys.executable, "-c", "from mpi4py import MPI"], 1, {})
    outcome: list[BaseException | None] = []

    def go() -> None:
        try:
            launcher.launch(job, [])
            outcome.append(None)
        except BaseException as exc:  # reported below  # noqa: BLE001
            outcome.append(exc)

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        return f"MPI_Comm_spawn did not return within {timeout} s"
    if outcome[0] is not None:
        return f"MPI_Comm_spawn failed: {outcome[0]}"
    deadline = time.monotonic() + timeout
    while (rc := launcher.poll(job)) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if rc != 0:
        return f"the spawned probe exited with {rc}: {job.err.read_text()[-500:]}"
    return None
