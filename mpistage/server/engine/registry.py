"""The models and scripts one shard holds: their entries, versions and run statistics. Not
thread-safe: the engine holds its lock around every call."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from ...errors import KeyNotFoundError
from .batcher import BatchPolicy, BatchQueue, Job
from .runtime import Runnable, ScriptUnit


@dataclass
class RunStats:
    """What one model or script has done (reported by INFO)."""

    requests: int = 0
    batches: int = 0
    rows: int = 0
    errors: int = 0
    queue_wait_s: float = 0.0
    compute_s: float = 0.0

    def report(self) -> dict[str, Any]:
        return {
            "requests": self.requests, "batches": self.batches, "rows": self.rows,
            "errors": self.errors,
            "mean_batch_size": round(self.rows / self.batches, 3) if self.batches else 0.0,
            "mean_requests_per_batch": round(self.requests / self.batches, 3) if self.batches else 0.0,
            "queue_wait_s": round(self.queue_wait_s, 6), "compute_s": round(self.compute_s, 6),
            "mean_queue_wait_ms": round(1e3 * self.queue_wait_s / self.requests, 3) if self.requests else 0.0,
            "mean_compute_ms": round(1e3 * self.compute_s / self.batches, 3) if self.batches else 0.0,
        }


@dataclass
class ModelEntry:
    """One version of a stored model. Replacing a model swaps the whole entry (on the loop
    thread); a batch holds a reference to the entry it runs on."""

    name: str
    runnable: Runnable
    data: bytes
    backend: str
    requested_device: str
    tag: str
    policy: BatchPolicy
    version: int = 0
    stats: RunStats = field(default_factory=RunStats)
    warning: str | None = None
    requested_policy: BatchPolicy | None = None  # what SET_MODEL asked, when ``policy`` differs

    def report(self, queued: int) -> dict[str, Any]:
        asked = self.requested_policy or self.policy
        return {"backend": self.backend, "device": self.runnable.device,
                "requested_device": self.requested_device, "tag": self.tag, "version": self.version,
                "batching": getattr(self.runnable, "batching", "dynamic"), "requested_batch_size": asked.batch_size,
                "batch_size": self.policy.batch_size, "min_batch_size": self.policy.min_batch_size,
                "min_batch_timeout": self.policy.min_batch_timeout_ms, "queued": queued,
                **self.stats.report()}


@dataclass
class ScriptEntry:
    """One version of a stored script (its source and compiled functions)."""

    name: str
    source: str
    unit: ScriptUnit
    requested_device: str
    version: int = 0
    stats: RunStats = field(default_factory=RunStats)
    warning: str | None = None

    def report(self) -> dict[str, Any]:
        return {"device": self.unit.device, "requested_device": self.requested_device,
                "version": self.version, **self.stats.report()}


@dataclass
class ScriptJob:
    """A queued RUN_SCRIPT: the job and which function of which script it calls."""

    job: Job
    script: str
    function: str


class Registry:
    """Models (each with its batch queue) and scripts, by name."""

    def __init__(self) -> None:
        self.models: dict[str, ModelEntry] = {}
        self.scripts: dict[str, ScriptEntry] = {}
        self.queues: dict[str, BatchQueue] = {}
        self._versions = itertools.count(1)

    def install_model(self, entry: ModelEntry) -> None:
        """Add or replace; statistics are per name, across versions."""
        entry.version = next(self._versions)
        old = self.models.get(entry.name)
        if old is not None:
            entry.stats = old.stats
        self.models[entry.name] = entry
        self.queues.setdefault(entry.name, BatchQueue())

    def install_script(self, entry: ScriptEntry) -> None:
        entry.version = next(self._versions)
        old = self.scripts.get(entry.name)
        if old is not None:
            entry.stats = old.stats
        self.scripts[entry.name] = entry

    def model(self, name: str) -> ModelEntry:
        """Raises KeyNotFoundError."""
        entry = self.models.get(name)
        if entry is None:
            raise KeyNotFoundError(f"model {name!r} does not exist")
        return entry

    def script(self, name: str) -> ScriptEntry:
        """Raises KeyNotFoundError."""
        entry = self.scripts.get(name)
        if entry is None:
            raise KeyNotFoundError(f"script {name!r} does not exist")
        return entry

    def delete_model(self, name: str) -> list[Job]:
        """Remove the model; returns the jobs that were waiting for it. Raises KeyNotFoundError."""
        self.model(name)
        del self.models[name]
        return self.queues.pop(name, BatchQueue()).drain()

    def delete_script(self, name: str) -> None:
        self.script(name)
        del self.scripts[name]

    def report(self) -> dict[str, Any]:
        return {"models": {name: e.report(len(self.queues.get(name, ()))) for name, e in self.models.items()},
                "scripts": {name: e.report() for name, e in self.scripts.items()}}
