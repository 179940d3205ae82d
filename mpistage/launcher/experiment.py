"""``Experiment``: SmartSim 0.8's driver API on mpistage (models, ensembles, a database of server
ranks, run directories, start/poll/stop, status, summary). docs/launcher.md has the details."""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..cli import server_command, start_ompi_server
from . import generation
from .database import Orchestrator
from .display import Progress
from .entities import Ensemble, Model
from .jobs import Job, MemberFuture
from .launchers import (
    Launcher,
    MpiexecLauncher,
    SpawnLauncher,
    die_with_parent,
    prepare_spawn_environment,
    probe_spawn,
)
from .permutations import Strategy
from .settings import RunSettings
from .state import STATE_DIR, table, write_state
from .status import Status

LAUNCHERS = ("auto", "spawn", "mpiexec")
STOP_GRACE_SECONDS = 10.0  # SIGTERM first; SIGKILL what is still there after this
MONITOR_INTERVAL = 0.1
DB_START_TIMEOUT = 180.0

_universe_lock = threading.Lock()
_universe: dict[str, Any] = {}  # this process's one ompi-server (spawned members need one per driver)
_experiments: weakref.WeakSet[Experiment] = weakref.WeakSet()


def _ompi_server(base: Path) -> Path:
    """The URI file of this process's ompi-server, started (under ``base``) on first use."""
    with _universe_lock:
        proc = _universe.get("proc")
        if proc is None or proc.poll() is not None:
            base.mkdir(parents=True, exist_ok=True)
            _universe["proc"] = start_ompi_server(base, preexec_fn=die_with_parent)
            _universe["uri"] = base / "ompi-server.uri"
            prepare_spawn_environment(_universe["uri"])
        return _universe["uri"]


def _close_all() -> None:
    for exp in list(_experiments):
        exp.close()
    proc = _universe.get("proc")
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_GRACE_SECONDS)
        except Exception:  # noqa: BLE001  (exit path: kill whatever is left)
            proc.kill()


atexit.register(_close_all)


def _on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # runs atexit: members and servers are stopped


class Experiment:
    """SmartSim's ``Experiment``: ``Experiment(name, exp_path=None, launcher="auto")``.

    ``launcher``: ``"spawn"`` (members are ``MPI_Comm_spawn``-ed by this driver), ``"mpiexec"``
    (each member is its own ``mpiexec`` job) or ``"auto"`` (spawn if a probe spawn works, else
    mpiexec; says which). SmartSim's ``"local"`` means ``"auto"``.
    Closing (``close()``, the end of a ``with`` block, interpreter exit, SIGTERM, Ctrl-C during a
    blocking start) stops every member and database it started."""

    def __init__(self, name: str, exp_path: str | os.PathLike[str] | None = None, launcher: str = "auto") -> None:
        self.name = name
        self.exp_path = Path(exp_path if exp_path is not None else Path.cwd() / name).resolve()
        self.exp_path.mkdir(parents=True, exist_ok=True)
        launcher = "auto" if launcher == "local" else launcher
        if launcher not in LAUNCHERS:
            raise ValueError(f"launcher {launcher!r}: mpistage has {LAUNCHERS} ('local' = 'auto'); for Slurm "
                             "or PBS run the driver inside the allocation (docs/launcher.md)")
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._db: Orchestrator | None = None
        self._db_job: Job | None = None
        self._monitor: threading.Thread | None = None
        self._closed = False
        self.uri = _ompi_server(self.exp_path / STATE_DIR)
        self.launcher_reason = ""
        self._launcher = self._choose(launcher)
        self.launcher = self._launcher.name
        _experiments.add(self)
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)
        self._write_state()

    def _choose(self, wanted: str) -> Launcher:
        if wanted == "mpiexec":
            return MpiexecLauncher(self.uri)
        if wanted == "spawn":
            return SpawnLauncher(self.uri)
        t0 = time.perf_counter()
        problem = probe_spawn(self.uri, self.exp_path / STATE_DIR / "probe")
        if problem is None:
            self.launcher_reason = f"a probe spawn worked in {time.perf_counter() - t0:.2f} s"
            chosen: Launcher = SpawnLauncher(self.uri)
        else:
            self.launcher_reason = f"spawn is not usable: {problem}"
            chosen = MpiexecLauncher(self.uri)
        print(f"mpistage: experiment {self.name}: launcher {chosen.name} ({self.launcher_reason})", file=sys.stderr)
        return chosen

    # ------------------------------------------------------------------ factories
    def create_run_settings(self, exe: str, exe_args: str | Iterable[str] | None = None, run_command: str = "auto",
                            run_args: Mapping[str, Any] | None = None, env_vars: Mapping[str, Any] | None = None,
                            container: Any = None, **kwargs: Any) -> RunSettings:
        """SmartSim's ``create_run_settings``; ``container`` is not supported."""
        if container is not None:
            raise ValueError("containers are not supported by mpistage's launcher")
        return RunSettings(exe, exe_args, run_command, run_args, env_vars, **kwargs)

    def create_model(self, name: str, run_settings: RunSettings, params: Mapping[str, Any] | None = None,
                     path: str | os.PathLike[str] | None = None, enable_key_prefixing: bool = False,
                     batch_settings: Any = None, params_as_args: Iterable[str] | None = None) -> Model:
        """A model run in ``exp_path/<name>/`` (or ``path``); ``batch_settings`` is not supported."""
        if batch_settings is not None:
            raise ValueError("batch_settings are not supported: run the driver inside the allocation")
        return Model(name, params, run_settings, path, params_as_args, enable_key_prefixing)

    def create_ensemble(self, name: str, params: Mapping[str, Any] | None = None, batch_settings: Any = None,
                        run_settings: RunSettings | None = None, replicas: int | None = None,
                        perm_strategy: str | Strategy = "all_perm", path: str | os.PathLike[str] | None = None,
                        **kwargs: Any) -> Ensemble:
        """Members ``<name>_<i>`` in ``exp_path/<name>/<member>/``; ``kwargs`` go to the strategy
        (``n_models``, ``seed`` for ``random``) or are ``params_as_args``."""
        if batch_settings is not None:
            raise ValueError("batch_settings are not supported: run the driver inside the allocation")
        return Ensemble(name, params, run_settings, replicas, perm_strategy, path, **kwargs)

    def create_database(self, port: int = 6379, path: str | os.PathLike[str] | None = None, db_nodes: int = 1,
                        batch: bool = False, hosts: Any = None, run_command: str = "auto",
                        interface: str | list[str] = "lo", account: str | None = None, time: str | None = None,
                        queue: str | None = None, single_cmd: bool = True, db_identifier: str = "orchestrator",
                        server_args: list[str] | None = None, launcher: str | None = None,
                        **kwargs: Any) -> Orchestrator:
        """``db_nodes`` mpistage server ranks (shards). Redis and batch arguments are accepted and ignored.
        ``launcher`` (``"spawn"`` or ``"mpiexec"``; default: the experiment's) says how the server
        ranks are started: ``MPI_Comm_spawn``-ed by this driver, or one ``mpiexec`` job."""
        if batch:
            raise ValueError("batch databases are not supported: run the driver inside the allocation")
        where = Path(path).resolve() if path is not None else self.exp_path / db_identifier
        db = Orchestrator(where, db_nodes, db_identifier, server_args, port=port, hosts=hosts,
                          run_command=run_command, interface=interface, account=account, time=time,
                          queue=queue, single_cmd=single_cmd, **kwargs)
        db.launcher = self._database_launcher(launcher or self.launcher)
        return db

    def _database_launcher(self, wanted: str) -> Launcher:
        """Spawned server ranks keep their link to this driver, which stops them through it."""
        if wanted == "spawn":
            return SpawnLauncher(self.uri, keep_link=True)
        if wanted == "mpiexec":
            return MpiexecLauncher(self.uri)
        raise ValueError(f"create_database: launcher {wanted!r} is not 'spawn' or 'mpiexec'")

    # ------------------------------------------------------------------ generation
    def generate(self, *entities: Model | Ensemble | Orchestrator, overwrite: bool = False,
                 tag: str | None = None, verbose: bool = False) -> None:
        """Make run directories (``exp_path/<model>/``, ``exp_path/<ensemble>/<member>/``) with the
        attached files; ``to_configure`` files get their ``;param;`` tags replaced."""
        if tag not in (None, ";"):
            raise ValueError("only the ';' tag is supported")
        for entity in entities:
            if isinstance(entity, Orchestrator):
                entity.path.mkdir(parents=True, exist_ok=True)
                continue
            made = generation.generate(self.exp_path, entity, overwrite)
            if verbose:
                print("\n".join(map(str, made)))

    # ------------------------------------------------------------------ start
    def start(self, *entities: Model | Ensemble | Orchestrator, block: bool = True, summary: bool = False,
              kill_on_interrupt: bool = True, timeout: float | None = None) -> list[MemberFuture]:
        """Start the database (if given) first, then every member; with ``block`` wait for the
        members, showing progress. ``timeout`` (seconds) stops and fails members still running after
        it (``RunSettings.set_walltime`` does the same per entity). Returns one Future-like handle
        per member started."""
        self._check_open()
        for entity in entities:
            if isinstance(entity, Orchestrator):
                self._start_database(entity)
        futures = []
        try:
            for entity in entities:
                if not isinstance(entity, Orchestrator):
                    futures += [self._start_model(m, entity.name, timeout) for m in entity.models]
            if block and futures:
                self._wait([f._job for f in futures], kill_on_interrupt)
        except KeyboardInterrupt:
            if kill_on_interrupt:
                self.stop(*[e for e in entities if not isinstance(e, Orchestrator)])
            raise
        if summary:
            self.summary()
        return futures

    def _start_database(self, db: Orchestrator) -> None:
        if self._db_job is not None and self._db_job.status is Status.RUNNING:
            raise RuntimeError(f"database {self._db.name} is already running in this experiment")
        db.path.mkdir(parents=True, exist_ok=True)
        db.address_file.unlink(missing_ok=True)
        cmd = [*server_command(), "--address", str(db.address_file), "--ompi-server-uri", str(self.uri),
               *db.server_args]
        job = Job(db.name, db.name, db.path, cmd, db.db_nodes, {}, connects=False)
        if db.launcher is None:  # an Orchestrator made directly
            db.launcher = self._database_launcher(self.launcher)
        self._launch(job, [], db.launcher)
        deadline = time.monotonic() + DB_START_TIMEOUT
        while not db.address_file.exists():
            if job.status.finished or time.monotonic() > deadline:
                self._request_stop(job)
                self._wait_done([job], STOP_GRACE_SECONDS + 5)
                raise RuntimeError(f"database {db.name} did not start ({job.status.value}):\n"
                                   f"{job.err.read_text()[-2000:] if job.err.exists() else ''}")
            time.sleep(0.05)
        self._db, self._db_job = db, job
        db.status = Status.RUNNING
        self._write_state()

    def _start_model(self, model: Model, entity: str, timeout: float | None) -> MemberFuture:
        if model.path is None or not model.path.is_dir():
            model.path = generation.member_dirs(self.exp_path, model)[0][1] if model.path is None else model.path
            model.path.mkdir(parents=True, exist_ok=True)
        if model.name in self._jobs and not self._jobs[model.name].status.finished:
            raise RuntimeError(f"member {model.name} is already running")
        env = dict(model.run_settings.env_vars)
        env.update(model.key_env())
        if self._db is not None and self._db.is_active():
            env["MPISTAGE_ADDRESS"] = str(self._db.address_file)
        limits = [t for t in (timeout, model.run_settings.walltime) if t is not None]
        job = Job(model.name, entity, model.path, model.run_settings.command(), model.run_settings.tasks, env,
                  walltime=min(limits) if limits else None)
        future = MemberFuture(job, self._lock)
        with self._lock:
            self._jobs[model.name] = job
        self._launch(job, model.run_settings.mpiexec_args(), self._launcher)
        return future

    def _launch(self, job: Job, mpiexec_args: list[str], launcher: Launcher) -> None:
        job.launcher = launcher
        job.started = time.time()  # the launch began (spawn blocks until the ranks are in MPI_Init)
        try:
            launcher.launch(job, mpiexec_args)
        except Exception as exc:  # a member that cannot start fails; the others go on
            job.reason = f"could not start: {exc}"
            self._finish(job, None)
            return
        job.status = Status.RUNNING
        self._write_state()
        self._ensure_monitor()

    # ------------------------------------------------------------------ monitoring
    def _ensure_monitor(self) -> None:
        if self._monitor is None or not self._monitor.is_alive():
            self._monitor = threading.Thread(target=self._watch, name=f"mpistage-{self.name}", daemon=True)
            self._monitor.start()

    def _running(self) -> list[Job]:
        with self._lock:
            jobs = [*self._jobs.values(), *([self._db_job] if self._db_job else [])]
        return [j for j in jobs if j.status is Status.RUNNING]

    def _watch(self) -> None:
        while not self._closed:
            running = self._running()
            if not running:
                time.sleep(MONITOR_INTERVAL)
                continue
            now = time.time()
            for job in running:
                if job.walltime is not None and not job.stop_requested and now - job.started > job.walltime:
                    job.reason = f"timeout after {job.walltime:g} s"
                    self._request_stop(job)
                if job.kill_at is not None and time.monotonic() > job.kill_at:
                    job.launcher.send_signal(job, signal.SIGKILL)
                    job.reason = (job.reason + "; " if job.reason else "") + "killed after SIGTERM"
                    job.kill_at = None
                rc = job.launcher.poll(job)
                if rc is not None:
                    self._finish(job, rc)
            time.sleep(MONITOR_INTERVAL)

    def _finish(self, job: Job, rc: int | None) -> None:
        with self._lock:
            job.returncode = rc
            job.ended = time.time()
            timed_out = job.reason.startswith("timeout")
            if job.stop_requested and not timed_out:
                job.status = Status.CANCELLED
            elif rc == 0 and not timed_out:
                job.status = Status.COMPLETED
            else:
                job.status = Status.FAILED
            callbacks, job.callbacks = job.callbacks, []
            job.done_event.set()
        if job is self._db_job and self._db is not None:
            self._db.status = job.status
        self._write_state()
        for fn in callbacks:
            try:
                fn(job.future)
            except Exception as exc:  # noqa: BLE001  (a user's callback must not stop the monitor)
                print(f"mpistage: done callback of {job.name} raised {exc!r}", file=sys.stderr)

    def _request_stop(self, job: Job) -> None:
        if job.status is not Status.RUNNING or job.stop_requested:
            return
        job.stop_requested = True
        job.kill_at = time.monotonic() + STOP_GRACE_SECONDS
        job.launcher.request_stop(job)

    def _wait_done(self, jobs: list[Job], seconds: float | None) -> bool:
        """Wait for ``jobs`` to finish, at most ``seconds`` (None: no bound); True if they did."""
        deadline = None if seconds is None else time.monotonic() + seconds
        for job in jobs:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not job.done_event.wait(left):
                return False
        return True

    def _wait(self, jobs: list[Job], kill_on_interrupt: bool, interval: float = 10.0) -> None:
        progress = Progress(interval=interval)
        while True:
            progress.update(jobs)
            if all(j.done_event.is_set() for j in jobs):
                return
            time.sleep(0.5 if progress.live else 0.2)

    # ------------------------------------------------------------------ status, stop
    def _jobs_of(self, entity: Model | Ensemble) -> list[Job | None]:
        with self._lock:
            return [self._jobs.get(m.name) for m in entity.models]

    def get_status(self, *entities: Model | Ensemble | Orchestrator) -> list[Status]:
        """One status per model (an ensemble gives one per member); ``NEVER_STARTED`` if not started."""
        out: list[Status] = []
        for entity in entities:
            if isinstance(entity, Orchestrator):
                out.append(entity.status)
            else:
                out += [j.status if j else Status.NEVER_STARTED for j in self._jobs_of(entity)]
        return out

    def finished(self, entity: Model | Ensemble | Orchestrator) -> bool:
        """Whether every member of ``entity`` has finished; raises if it was never started."""
        if isinstance(entity, Orchestrator):
            return entity.status.finished
        jobs = self._jobs_of(entity)
        if not jobs or any(j is None for j in jobs):
            raise ValueError(f"{entity.name} was not started by this experiment")
        return all(j.status.finished for j in jobs)

    def poll(self, interval: int = 10, verbose: bool = True, kill_on_interrupt: bool = True) -> None:
        """Wait until every started member has finished, logging progress every ``interval`` s."""
        with self._lock:
            jobs = list(self._jobs.values())
        try:
            if verbose:
                self._wait(jobs, kill_on_interrupt, interval)
            else:
                self._wait_done(jobs, None)
        except KeyboardInterrupt:
            if kill_on_interrupt:
                self._stop_jobs(jobs)
            raise

    def stop(self, *entities: Model | Ensemble | Orchestrator) -> None:
        """SIGTERM the entities' processes, SIGKILL what is left after a bound; status ``CANCELLED``.
        Returns when they have ended."""
        members = [j for e in entities if not isinstance(e, Orchestrator) for j in self._jobs_of(e) if j]
        self._stop_jobs(members)
        if any(isinstance(e, Orchestrator) for e in entities) and self._db_job is not None:
            from .. import close_connection

            close_connection()
            self._stop_jobs([self._db_job])

    def _stop_jobs(self, jobs: list[Job]) -> None:
        for job in jobs:
            self._request_stop(job)
        if jobs:
            self._ensure_monitor()
        self._wait_done(jobs, STOP_GRACE_SECONDS + 10)

    def summary(self, style: str = "github") -> str:
        """A table of every member (and the database) with status, exit status, run time and last
        output line; printed and returned."""
        with self._lock:
            jobs = [*([self._db_job] if self._db_job else []), *self._jobs.values()]
        text = table([dict(j.to_dict(), last_line=j.last_line()) for j in jobs]) if jobs else "nothing started"
        print(text)
        return text

    # ------------------------------------------------------------------ state, close
    def _write_state(self) -> None:
        with self._lock:
            members = [dict(j.to_dict(), last_line=j.last_line()) for j in self._jobs.values()]
        db = self._db
        write_state(self.exp_path, {
            "name": self.name, "exp_path": str(self.exp_path), "launcher": getattr(self, "launcher", ""),
            "launcher_reason": self.launcher_reason, "driver_pid": os.getpid(), "updated": time.time(),
            "database": {"name": db.name, "status": db.status.value, "shards": db.db_nodes,
                         "address": str(db.address_file)} if db else None,
            "members": members})

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"experiment {self.name} is closed")

    def close(self) -> None:
        """Stop every running member, then the database; idempotent."""
        if self._closed:
            return
        with self._lock:
            members = list(self._jobs.values())
        self._stop_jobs([j for j in members if j.status is Status.RUNNING])
        if self._db_job is not None and self._db_job.status is Status.RUNNING:
            from .. import close_connection

            close_connection()  # this driver's own Client says goodbye while the servers are there
            self._stop_jobs([self._db_job])
        self._closed = True
        self._write_state()

    def __enter__(self) -> Experiment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Experiment({self.name!r}, {str(self.exp_path)!r}, launcher={self.launcher!r})"

