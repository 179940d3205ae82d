"""The in-process backend: a store in this process's memory, split into shards by the same key
router as the servers; no MPI. It exists for fast tests of ``Client`` (argument checks, key
prefixes, routing) and as the smallest example of a backend.

What it keeps, it copies (on put and on get), as the servers do. It runs no models or scripts:
its engine half is None, so ``Client``'s model and script calls raise BadArgumentError.
``Client(backend="inprocess")`` objects of one process share one store;
``Client(backend=InProcessStore.backend(nshards=3))`` gets a fresh one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from ..dataset import Dataset
from ..errors import BadArgumentError, KeyNotFoundError, ServerUnreachableError
from ..protocol import Kind, TensorDesc, describe
from ..router import shard_of
from .base import Backend, Into, ServerAdmin, StoreBackend

T = TypeVar("T")
_NAMES = {Kind.TENSOR: "tensor", Kind.DATASET: "dataset", Kind.LIST: "list"}
_shared: InProcessStore | None = None
_shared_lock = threading.Lock()


def create(address: str | None, comm: Any) -> Backend:
    """The registry's factory: this process's shared one-shard in-process store."""
    global _shared
    with _shared_lock:
        if _shared is None or _shared.closed:
            _shared = InProcessStore()
        return Backend("inprocess", _shared)


class _Shard:
    def __init__(self) -> None:
        self.tables: dict[Kind, dict[str, Any]] = {Kind.TENSOR: {}, Kind.DATASET: {}, Kind.LIST: {}}
        self.requests = 0


def _stored(array: np.ndarray) -> np.ndarray:
    """A private copy of ``array``, in its memory order (non-contiguous arrays become C order)."""
    _, contiguous = describe(array)  # raises TypeError for an unsupported dtype
    return contiguous.copy(order="K")


class InProcessStore(StoreBackend, ServerAdmin):
    """The store half in this process's memory, thread-safe (methods documented in
    :class:`~mpistage.backends.base.StoreBackend`)."""

    def __init__(self, nshards: int = 1) -> None:
        if nshards < 1:
            raise BadArgumentError("an in-process store needs at least one shard")
        self._shards = [_Shard() for _ in range(nshards)]
        self._lock = threading.Lock()
        self.closed = False

    @classmethod
    def backend(cls, nshards: int = 1) -> Backend:
        """A :class:`Backend` over a new, empty store of ``nshards`` shards."""
        return Backend("inprocess", cls(nshards))

    @property
    def nshards(self) -> int:
        return len(self._shards)

    def shard_of(self, key: str) -> int:
        """The shard that holds ``key`` (the servers' routing)."""
        return shard_of(key, len(self._shards))

    def _with(self, kind: Kind, key: str, action: Callable[[dict[str, Any]], T]) -> T:
        if self.closed:
            raise ServerUnreachableError("this in-process store has been closed")
        shard = self._shards[self.shard_of(key)]
        with self._lock:
            shard.requests += 1
            return action(shard.tables[kind])

    def _get(self, kind: Kind, key: str) -> Any:
        def take(table: dict[str, Any]) -> Any:
            if key not in table:
                raise KeyNotFoundError(f"{_NAMES[kind]} {key!r} does not exist")
            return table[key]
        return self._with(kind, key, take)

    def _put(self, kind: Kind, key: str, value: Any) -> None:
        self._with(kind, key, lambda table: table.__setitem__(key, value))

    # ------------------------------------------------------------ tensors
    def put_tensor(self, key: str, array: np.ndarray) -> None:
        self._put(Kind.TENSOR, key, _stored(array))

    def get_tensor(self, key: str, into: Into | None = None) -> np.ndarray:
        stored = self._get(Kind.TENSOR, key)
        if into is None:
            return stored.copy(order="K")
        order = 1 if stored.ndim > 1 and stored.flags.f_contiguous and not stored.flags.c_contiguous else 0
        target = into(TensorDesc(stored.dtype, stored.shape, order))
        target[...] = stored
        return target

    # ------------------------------------------------------------ any kind
    def exists(self, kind: Kind, key: str) -> bool:
        kinds = tuple(_NAMES) if kind == Kind.ANY else (kind,)
        return any(self._with(k, key, lambda table: key in table) for k in kinds)

    def delete(self, kind: Kind, key: str) -> None:
        self._get(kind, key)
        self._with(kind, key, lambda table: table.pop(key))

    def copy(self, kind: Kind, src: str, dst: str, rename: bool = False) -> None:
        value = self._get(kind, src)
        if kind == Kind.TENSOR:
            value = value.copy(order="K")
        elif kind == Kind.DATASET:
            value = _dataset_copy(value, dst)
        else:
            value = list(value)
        self._put(kind, dst, value)
        if rename and src != dst:
            self.delete(kind, src)

    # ------------------------------------------------------------ datasets and lists
    def put_dataset(self, key: str, dataset: Dataset) -> None:
        self._put(Kind.DATASET, key, _dataset_copy(dataset, key))

    def get_dataset(self, key: str) -> Dataset:
        return _dataset_copy(self._get(Kind.DATASET, key), key)

    def list_append(self, key: str, item: str) -> None:
        self._with(Kind.LIST, key, lambda table: table.setdefault(key, []).append(item))

    def list_length(self, key: str) -> int:
        return self._with(Kind.LIST, key, lambda table: len(table.get(key, ())))

    def list_range(self, key: str, start: int, end: int) -> list[str]:
        items: list[str] = self._with(Kind.LIST, key, lambda table: list(table.get(key, ())))
        n = len(items)
        start = max(start + n if start < 0 else start, 0)
        end = end + n if end < 0 else end
        return items[start:min(end, n - 1) + 1] if start <= end else []

    # ------------------------------------------------------------ housekeeping
    def server_info(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{"shard": i, "nshards": len(self._shards),
                     "keys": sum(len(t) for t in s.tables.values()),
                     "tensors": len(s.tables[Kind.TENSOR]), "datasets": len(s.tables[Kind.DATASET]),
                     "lists": len(s.tables[Kind.LIST]),
                     "bytes_used": sum(a.nbytes for a in s.tables[Kind.TENSOR].values()),
                     "requests": s.requests} for i, s in enumerate(self._shards)]

    def save(self) -> list[str]:
        raise BadArgumentError("the in-process backend keeps no snapshots")

    def shutdown_servers(self) -> None:
        self.close()

    def flush(self) -> None:
        """Nothing to do: every put is stored when it returns."""

    def flush_db(self, shards: Sequence[int]) -> None:
        with self._lock:
            for s in shards:
                for table in self._shards[s].tables.values():
                    table.clear()

    def config_get(self, shard: int, pattern: str) -> dict[str, str]:
        raise BadArgumentError("the in-process backend has no server settings")

    def config_set(self, shards: Sequence[int], name: str, value: str) -> None:
        raise BadArgumentError("the in-process backend has no server settings")

    def close(self) -> None:
        self.closed = True


def _dataset_copy(dataset: Dataset, name: str) -> Dataset:
    scalars, strings = dataset.metadata_arrays()
    tensors = {t: _stored(dataset.get_tensor(t)) for t in dataset.get_tensor_names()}
    return Dataset.from_parts(name, tensors, scalars, strings)
