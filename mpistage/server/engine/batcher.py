"""Dynamic batching for one model: which queued requests run together in one forward pass.

RedisAI's meaning of the three settings of a model:

* ``batch_size`` 0: every request runs alone. Otherwise requests waiting for the model are
  joined along dim 0 (oldest first) up to ``batch_size`` rows; a request larger than
  ``batch_size`` runs alone.
* ``min_batch_size``: do not run until at least that many rows wait...
* ``min_batch_timeout`` (ms): ...unless the oldest request has waited this long. 0 means wait
  for ``min_batch_size`` without a limit (as in RedisAI).

Only requests with the same signature join (number of inputs, and each input's dtype and shape
after dim 0). No framework, MPI or store here: a :class:`BatchQueue` orders :class:`Job` objects and
:func:`split_rows` cuts a batched output back into each job's rows.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class BatchPolicy:
    """A model's batching settings (see the module docstring)."""

    batch_size: int = 0
    min_batch_size: int = 0
    min_batch_timeout_ms: int = 0


@dataclass(eq=False)  # jobs are compared by identity (their inputs are tensors)
class Job:
    """One RUN_MODEL or RUN_SCRIPT request waiting in the engine.

    ``rows`` is dim 0 of the inputs (None when they cannot be batched: a 0-d input, or inputs
    whose dim 0 differ); ``signature`` identifies the requests that may share a batch.
    ``deadline`` (monotonic seconds, None = none) is when the engine's watchdog answers a timeout
    of ``timeout_s`` seconds for ``what``. :meth:`complete` calls ``finish(outputs, error)``
    exactly once, from whichever thread comes first (the worker, the watchdog, or the loop
    thread when the model is deleted).
    """

    inputs: list[Any]
    finish: Callable[[list[Any] | None, Exception | None], None]
    rows: int | None = None
    signature: tuple = ()
    enqueued: float = field(default_factory=time.monotonic)
    deadline: float | None = None
    timeout_s: float = 0.0
    what: str = "the run"
    done: bool = False
    timed_out: bool = False  # finished by the watchdog
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def complete(self, outputs: list[Any] | None, error: Exception | None) -> bool:
        """Finish the job unless it already was; True when this call finished it."""
        with self._lock:
            if self.done:
                return False
            self.done = True
        self.finish(outputs, error)
        return True

    def expired(self, now: float) -> bool:
        return self.deadline is not None and self.deadline <= now and not self.done


def job_shape(inputs: Sequence[Any]) -> tuple[int | None, tuple]:
    """``(rows, signature)`` of a job's inputs (anything with ``.shape`` and ``.dtype``)."""
    signature = (len(inputs),) + tuple((str(t.dtype), tuple(t.shape[1:])) for t in inputs)
    dims = {t.shape[0] for t in inputs if len(t.shape) > 0}
    if not inputs or any(len(t.shape) == 0 for t in inputs) or len(dims) != 1:
        return None, signature
    return int(dims.pop()), signature


class BatchQueue:
    """The jobs waiting for one model, in arrival order. Not thread-safe: the engine holds its
    lock around every call."""

    def __init__(self) -> None:
        self.jobs: collections.deque[Job] = collections.deque()

    def __len__(self) -> int:
        return len(self.jobs)

    def push(self, job: Job) -> None:
        self.jobs.append(job)

    def oldest(self) -> float | None:
        return self.jobs[0].enqueued if self.jobs else None

    def take(self, policy: BatchPolicy, now: float) -> tuple[list[Job], float | None]:
        """The jobs to run now (removed from the queue), or ``([], wait)``: nothing is ready;
        ask again within ``wait`` seconds (None: only when a new job arrives)."""
        if not self.jobs:
            return [], None
        first = self.jobs[0]
        if policy.batch_size <= 0 or first.rows is None or first.rows >= policy.batch_size:
            self.jobs.popleft()
            return [first], None
        group, rows = [first], first.rows
        for job in list(self.jobs)[1:]:
            if rows >= policy.batch_size:
                break
            if (job.signature == first.signature and job.rows is not None
                    and rows + job.rows <= policy.batch_size):
                group.append(job)
                rows += job.rows
        if rows < min(policy.min_batch_size, policy.batch_size):
            if policy.min_batch_timeout_ms <= 0:
                return [], None
            remaining = first.enqueued + policy.min_batch_timeout_ms / 1000 - now
            if remaining > 0:
                return [], remaining
        for job in group:
            self.jobs.remove(job)
        return group, None

    def expire(self, now: float) -> list[Job]:
        """Remove and return the jobs whose deadline has passed."""
        gone = [j for j in self.jobs if j.expired(now)]
        for job in gone:
            self.jobs.remove(job)
        return gone

    def drain(self) -> list[Job]:
        """Every waiting job (the model was deleted, or the engine stops)."""
        jobs = list(self.jobs)
        self.jobs.clear()
        return jobs


def split_rows(output: Any, rows: Sequence[int]) -> list[Any]:
    """Cut a batched output (dim 0 = ``sum(rows)``) into one piece per job, in job order.
    Raises ValueError when the output's dim 0 does not match: such a model cannot be batched."""
    total = sum(rows)
    if len(output.shape) == 0 or output.shape[0] != total:
        raise ValueError(f"batched output of shape {tuple(output.shape)} does not have the batch's "
                         f"{total} rows in dim 0")
    pieces, start = [], 0
    for n in rows:
        pieces.append(output[start:start + n])
        start += n
    return pieces
