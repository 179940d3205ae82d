"""What :class:`mpistage.Client` needs from a staging backend: a store half (tensors, datasets,
lists, the servers' housekeeping) and, optionally, an engine half (models, scripts, runs).

``Client`` keeps SmartRedis's names, key prefixes and argument checks and hands each backend
finished keys (prefixes applied, as ``str``) and checked arguments; how the data travels, and
where it lands, is the backend's business. A backend is one module that builds a
:class:`Backend` and one entry in ``mpistage.backends.BACKENDS``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..dataset import Dataset
from ..protocol import Kind, Op, TensorDesc

#: Given the stored tensor's descriptor, the array to fill (it may raise BadArgumentError).
Into = Callable[[TensorDesc], np.ndarray]


class StoreBackend(Protocol):
    """Keys and their values. Every method raises KeyNotFoundError for a missing key and
    StoreFullError when a put does not fit; ``kind`` says what a key names."""

    @property
    def nshards(self) -> int:
        """How many shards the keys are spread over (1 for a backend without shards)."""

    def put_tensor(self, key: str, array: np.ndarray) -> None:
        """Store ``array`` (any supported dtype, shape and memory order) under ``key``."""

    def get_tensor(self, key: str, into: Into | None = None) -> np.ndarray:
        """The tensor under ``key``, in the array ``into(descriptor)`` gives (a new one when None)."""

    def exists(self, kind: Kind, key: str) -> bool:
        """Whether ``key`` names a ``kind`` (``Kind.ANY``: a tensor, dataset or list)."""

    def delete(self, kind: Kind, key: str) -> None:
        """Remove the ``kind`` called ``key`` (a list: not the datasets it names)."""

    def copy(self, kind: Kind, src: str, dst: str, rename: bool = False) -> None:
        """Copy (``rename``: move) a tensor, dataset or list to a new key, replacing ``dst``."""

    def put_dataset(self, key: str, dataset: Dataset) -> None:
        """Store a dataset's tensors and metadata under ``key``."""

    def get_dataset(self, key: str) -> Dataset:
        """The dataset under ``key`` (its name is the stored key)."""

    def list_append(self, key: str, item: str) -> None:
        """Append ``item`` (a dataset key) to the list ``key``, creating it."""

    def list_length(self, key: str) -> int:
        """The length of list ``key`` (0 when there is none)."""

    def list_range(self, key: str, start: int, end: int) -> list[str]:
        """Items ``start..end`` of list ``key``, inclusive; negative indices count from the end."""

    def server_info(self) -> list[dict[str, Any]]:
        """Per shard: statistics (keys, bytes used, requests served...)."""

    def save(self) -> list[str]:
        """Snapshot every shard; returns where each went."""

    def shutdown_servers(self) -> None:
        """Ask the servers to stop once every job has said goodbye, then say goodbye."""

    def flush(self) -> None:
        """Publish what was put so far (a step-based backend ends its step; others do nothing)."""

    def close(self) -> None:
        """Say goodbye; later calls raise ServerUnreachableError."""


class ServerBridge(Protocol):
    """The ADIOS2 bridge in the server ranks (docs/adios2.md, "The bridge"), for a store half
    with servers: ``Client``'s ``bridge_*`` methods need it (the MPI backend has it)."""

    def bridge(self, op: Op, name: str, spec: dict[str, Any] | None) -> list[dict[str, Any]]:
        """Send bridge operation ``op`` (BRIDGE_EXPORT, BRIDGE_INGEST, BRIDGE_STOP) for the bridge
        ``name``, with ``spec`` (a JSON object) when given, to every shard at once; returns each
        shard's JSON reply, in shard order. Raises the first shard's error after reading every reply."""


@runtime_checkable
class ServerAdmin(Protocol):
    """Server management, for a store half with servers (SmartRedis's ``flush_db``,
    ``config_get``, ``config_set``): shards are given by index."""

    def flush_db(self, shards: Sequence[int]) -> None:
        """Remove every key of every kind (models and scripts too) from each of ``shards``."""

    def config_get(self, shard: int, pattern: str) -> dict[str, str]:
        """The settings of ``shard`` whose names match the glob ``pattern``, as text."""

    def config_set(self, shards: Sequence[int], name: str, value: str) -> None:
        """Change setting ``name`` to ``value`` on each of ``shards``."""


@dataclass(frozen=True)
class ModelSpec:
    """How a model runs: RedisAI's settings, checked by ``Client``."""

    backend: str = "TORCH"
    device: str = "CPU"
    tag: str = ""
    batch_size: int = 0
    min_batch_size: int = 0
    min_batch_timeout: int = 0


class RunHandle(abc.ABC):
    """A ``run_model_async``/``run_script_async`` call in flight: ``done()`` says whether it has
    finished, ``wait()`` waits for it and raises what the run raised (each call of ``wait`` after
    the first returns or raises the same)."""

    #: what runs, for messages: ``run_model('m')``
    what: str

    @abc.abstractmethod
    def done(self) -> bool:
        """True when the run has finished (successfully or not); never waits."""

    @abc.abstractmethod
    def wait(self, timeout: float | None = None) -> None:
        """Wait until the run has finished; raises its error (KeyNotFoundError, BadArgumentError,
        ServerRuntimeError...), or TimeoutError when ``timeout`` seconds pass first (the run goes
        on; wait again later)."""


class EngineBackend(Protocol):
    """Models and scripts, stored where runs happen, and runs on stored tensors."""

    def set_model(self, key: str, data: bytes, spec: ModelSpec) -> None:
        """Store TorchScript file bytes under ``key`` everywhere, all or nothing."""

    def get_model(self, key: str) -> bytes:
        """The model file bytes under ``key``."""

    def set_script(self, key: str, source: str, device: str) -> None:
        """Store TorchScript source under ``key`` everywhere, all or nothing."""

    def get_script(self, key: str) -> str:
        """The script source under ``key``."""

    def delete_code(self, kind: Kind, key: str) -> None:
        """Remove the model or script (``kind`` MODEL or SCRIPT) ``key`` everywhere."""

    def model_exists(self, key: str) -> bool:
        """Whether a model ``key`` is stored."""

    def run_model(self, key: str, inputs: Sequence[str], outputs: Sequence[str], timeout_ms: int = 0) -> RunHandle:
        """Start running model ``key`` on the tensors ``inputs``, storing ``outputs``; the run
        fails with a timeout after ``timeout_ms`` (0: the server's default)."""

    def run_script(self, key: str, function: str, inputs: Sequence[str],
                   outputs: Sequence[str], timeout_ms: int = 0) -> RunHandle:
        """Start calling ``function`` of script ``key`` on ``inputs``, storing ``outputs``
        (``timeout_ms`` as for :meth:`run_model`)."""


@dataclass(frozen=True)
class Backend:
    """What a backend factory returns: its name, its store half and its engine half (None when
    the backend runs no models: the engine calls of ``Client`` then raise BadArgumentError)."""

    name: str
    store: StoreBackend
    engine: EngineBackend | None = None


#: A backend factory: (the connection file's path or None, the application communicator or None).
BackendFactory = Callable[[str | None, Any], Backend]
