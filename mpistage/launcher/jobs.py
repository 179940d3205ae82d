"""A started member (or the database's server ranks) as the experiment tracks it, and the
``concurrent.futures.Future``-like handle a driver can hold."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .status import Status


class MemberFailedError(RuntimeError):
    """``MemberFuture.result()`` of a member that failed or was cancelled."""


@dataclass
class Job:
    """One launched MPI job: a member with ``tasks`` ranks in ``run_dir``."""

    name: str
    entity: str
    run_dir: Path
    command: list[str]
    tasks: int
    env: dict[str, str]
    walltime: float | None = None
    connects: bool = True  # a member that connects to the servers (False: the servers themselves)
    status: Status = Status.NEW
    returncode: int | None = None
    reason: str = ""
    started: float | None = None
    ended: float | None = None
    stop_requested: bool = False
    kill_at: float | None = None
    handle: Any = None  # the launcher's own record (a Popen, spawned pids...)
    launcher: Any = None  # the Launcher that started it
    done_event: threading.Event = field(default_factory=threading.Event)
    callbacks: list[Callable[[MemberFuture], None]] = field(default_factory=list)
    future: MemberFuture | None = None

    @property
    def out(self) -> Path:
        return self.run_dir / f"{self.name}.out"

    @property
    def err(self) -> Path:
        return self.run_dir / f"{self.name}.err"

    def runtime(self) -> float:
        if self.started is None:
            return 0.0
        return (self.ended or time.time()) - self.started

    def last_line(self, limit: int = 4096) -> str:
        """The last non-empty line of the member's stdout (or stderr when stdout has none)."""
        for path in (self.out, self.err):
            try:
                with open(path, "rb") as fh:
                    fh.seek(0, 2)
                    fh.seek(max(0, fh.tell() - limit))
                    lines = [ln for ln in fh.read().decode(errors="replace").splitlines() if ln.strip()]
            except OSError:
                continue
            if lines:
                return lines[-1].strip()
        return ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "entity": self.entity, "run_dir": str(self.run_dir), "tasks": self.tasks,
                "command": self.command, "status": self.status.value, "returncode": self.returncode,
                "reason": self.reason, "started": self.started, "ended": self.ended}


class MemberFuture:
    """A started member as a ``concurrent.futures.Future``-like object: ``done()``, ``result()``
    (the exit status 0; raises :class:`MemberFailedError` when the member failed or was cancelled),
    ``exception()``, ``add_done_callback(fn)``, ``status``."""

    def __init__(self, job: Job, lock: threading.Lock) -> None:
        self._job = job
        self._lock = lock
        job.future = self

    @property
    def name(self) -> str:
        return self._job.name

    @property
    def status(self) -> Status:
        return self._job.status

    def done(self) -> bool:
        return self._job.done_event.is_set()

    def running(self) -> bool:
        return self._job.status is Status.RUNNING

    def cancelled(self) -> bool:
        return self._job.status is Status.CANCELLED

    def exception(self, timeout: float | None = None) -> MemberFailedError | None:
        if not self._job.done_event.wait(timeout):
            raise TimeoutError(f"member {self.name} still running after {timeout} s")
        job = self._job
        if job.status is Status.COMPLETED:
            return None
        return MemberFailedError(f"member {job.name} {job.status.value.lower()}"
                                 f" (exit status {job.returncode}{', ' + job.reason if job.reason else ''})")

    def result(self, timeout: float | None = None) -> int:
        """Wait for the member; its exit status (0), or raise if it did not complete."""
        exc = self.exception(timeout)
        if exc is not None:
            raise exc
        return 0

    def add_done_callback(self, fn: Callable[[MemberFuture], None]) -> None:
        """Call ``fn(future)`` when the member finishes (at once when it has), from the monitor thread."""
        with self._lock:
            if not self.done():
                self._job.callbacks.append(fn)
                return
        fn(self)

    def __repr__(self) -> str:
        return f"<MemberFuture {self.name} {self.status.value}>"
