"""One shard's in-memory store: tensors, datasets and aggregation lists, under a memory cap.

Pure data structure: no MPI here. The handlers (``server/handlers.py``) decode requests and call
these methods, on the loop thread only; they raise :class:`~mpistage.errors.MpistageError`
subclasses that become reply statuses. Stored values are never changed in place (a put replaces
the value), so a reply or a snapshot may keep reading a value the store has since dropped. Every
tensor buffer the store keeps comes from its :class:`~.allocator.Allocator`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...errors import BadArgumentError, KeyNotFoundError, StoreFullError
from ...protocol import MAX_FIELDS, Kind, TensorDesc
from ..memory import rss_bytes
from .allocator import HEAP, Allocator

#: What a key costs the shard beyond its bytes and its name (its entry, objects and allocation),
#: counted against the cap: a shard grew 305 bytes per 8-byte tensor under a 13-byte key
#: (``scaling/key_overhead.py``, 60,000 keys), so 305 - 8 - 13 rounded down.
KEY_OVERHEAD = 280
#: The same for each tensor of a dataset and each item of a list.
MEMBER_OVERHEAD = 200
ITEM_OVERHEAD = 64
#: A list holds at most this many dataset names: LIST_RANGE answers a whole range in one reply,
#: whose fields are limited to MAX_FIELDS (docs/protocol.md, "Limits").
MAX_LIST_LENGTH = MAX_FIELDS


@dataclass(slots=True)
class StoredTensor:
    """A tensor's descriptor and its bytes (a flat uint8 array in the descriptor's order)."""

    desc: TensorDesc
    data: np.ndarray

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)

    def array(self) -> np.ndarray:
        return self.desc.view(self.data)


@dataclass
class StoredDataset:
    """A dataset: named tensors plus its metadata, kept in the documented wire layout."""

    tensors: dict[str, StoredTensor]
    metadata: bytes

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes + MEMBER_OVERHEAD + len(n) for n, t in self.tensors.items()) + len(self.metadata)


@dataclass(frozen=True)
class StoreContents:
    """What a snapshot writes: the store's tables as they were at one moment (taken on the loop
    thread; values are immutable, lists are copied)."""

    tensors: dict[str, StoredTensor]
    datasets: dict[str, StoredDataset]
    lists: dict[str, list[str]]


@dataclass
class ShardStore:
    """Tensors, datasets and lists of one shard. ``max_bytes`` 0 means no cap. ``used_bytes``
    counts each value's bytes plus what its key costs (``KEY_OVERHEAD`` and the key's length)."""

    max_bytes: int = 0
    allocator: Allocator = HEAP
    tensors: dict[str, StoredTensor] = field(default_factory=dict)
    datasets: dict[str, StoredDataset] = field(default_factory=dict)
    lists: dict[str, list[str]] = field(default_factory=dict)
    used_bytes: int = 0

    # ------------------------------------------------------------ memory
    def alloc(self, nbytes: int) -> np.ndarray:
        """A buffer for a value this store is about to keep (from its allocator)."""
        return self.allocator.alloc(nbytes)

    def _drop(self, obj: StoredTensor | StoredDataset | list[str] | None) -> None:
        """Give a value's buffers back to the allocator (the value left the store)."""
        if isinstance(obj, StoredTensor):
            self.allocator.release(obj.data)
        elif isinstance(obj, StoredDataset):
            for t in obj.tensors.values():
                self.allocator.release(t.data)

    def _duplicate(self, obj: StoredTensor | StoredDataset | list[str]) -> StoredTensor | StoredDataset | list[str]:
        """A copy that owns its own buffers (each stored value owns exactly the buffers it holds)."""
        if isinstance(obj, list):
            return list(obj)
        if isinstance(obj, StoredTensor):
            return self._copy_tensor(obj)
        return StoredDataset({n: self._copy_tensor(t) for n, t in obj.tensors.items()}, obj.metadata)

    def _copy_tensor(self, tensor: StoredTensor) -> StoredTensor:
        buf = self.alloc(tensor.nbytes)
        buf[...] = tensor.data
        return StoredTensor(tensor.desc, buf)

    # ------------------------------------------------------------ accounting
    def reserve(self, nbytes: int, replacing: int = 0) -> None:
        """Raise :class:`StoreFullError` unless ``nbytes`` more (less ``replacing``) fit."""
        after = self.used_bytes - replacing + nbytes
        if self.max_bytes and after > self.max_bytes:
            raise StoreFullError(
                f"store full: {nbytes} bytes do not fit ({self.used_bytes} of {self.max_bytes} "
                f"bytes used on this shard)")

    @staticmethod
    def _size(obj: StoredTensor | StoredDataset | list[str]) -> int:
        if isinstance(obj, list):
            return sum(len(s) + ITEM_OVERHEAD for s in obj)
        return obj.nbytes

    @classmethod
    def cost(cls, key: str, obj: StoredTensor | StoredDataset | list[str] | None) -> int:
        """What ``obj`` stored under ``key`` counts against the cap (0 for None)."""
        return 0 if obj is None else KEY_OVERHEAD + len(key) + cls._size(obj)

    def _table(self, kind: Kind) -> dict:
        if kind == Kind.TENSOR:
            return self.tensors
        if kind == Kind.DATASET:
            return self.datasets
        if kind == Kind.LIST:
            return self.lists
        raise BadArgumentError(f"the store holds no objects of kind {chr(kind)!r}")

    def _set(self, table: dict, key: str, obj: StoredTensor | StoredDataset | list[str]) -> None:
        old = table.get(key)
        old_cost, new_cost = self.cost(key, old), self.cost(key, obj)
        self.reserve(new_cost, old_cost)
        table[key] = obj
        self.used_bytes += new_cost - old_cost
        self._drop(old)

    @property
    def nkeys(self) -> int:
        return len(self.tensors) + len(self.datasets) + len(self.lists)

    def report(self) -> dict[str, Any]:
        """Counts and bytes, for INFO."""
        return {"keys": self.nkeys, "tensors": len(self.tensors), "datasets": len(self.datasets),
                "lists": len(self.lists), "bytes_used": self.used_bytes, "max_bytes": self.max_bytes,
                "rss_bytes": rss_bytes(), **self.allocator.report()}

    def contents(self) -> StoreContents:
        """The tables as they are now, for a snapshot written on another thread: call it on the
        loop thread (the only thread that changes the store)."""
        return StoreContents(dict(self.tensors), dict(self.datasets),
                             {k: list(v) for k, v in self.lists.items()})

    def remove_all(self) -> int:
        """Remove every tensor, dataset and list (Redis's FLUSHDB on this shard); returns how many
        keys there were. Their buffers go back to the allocator, as with :meth:`delete`."""
        removed = self.nkeys
        for table in (self.tensors, self.datasets, self.lists):
            for obj in table.values():
                self._drop(obj)
            table.clear()
        self.used_bytes = 0
        return removed

    # ------------------------------------------------------------ generic key operations
    def get(self, kind: Kind, key: str) -> StoredTensor | StoredDataset | list[str]:
        table = self._table(kind)
        try:
            return table[key]
        except KeyError:
            raise KeyNotFoundError(f"{_NAMES[kind]} {key!r} does not exist") from None

    def exists(self, kind: Kind, key: str) -> bool:
        if kind == Kind.ANY:
            return key in self.tensors or key in self.datasets or key in self.lists
        return key in self._table(kind)

    def delete(self, kind: Kind, key: str) -> None:
        obj = self.get(kind, key)
        del self._table(kind)[key]
        self.used_bytes -= self.cost(key, obj)
        self._drop(obj)

    def copy(self, kind: Kind, src: str, dst: str) -> None:
        obj = self.get(kind, src)
        if src == dst:
            return
        table = self._table(kind)
        self.reserve(self.cost(dst, obj), self.cost(dst, table.get(dst)))  # before copying the bytes
        self._set(table, dst, self._duplicate(obj))

    def rename(self, kind: Kind, src: str, dst: str) -> None:
        obj = self.get(kind, src)
        if src == dst:
            return
        table = self._table(kind)
        old = table.pop(dst, None)
        self.used_bytes -= self.cost(dst, old)
        self._drop(old)
        del table[src]
        table[dst] = obj
        self.used_bytes += self.cost(dst, obj) - self.cost(src, obj)

    # ------------------------------------------------------------ typed puts
    def put_tensor(self, key: str, tensor: StoredTensor) -> None:
        old = self.tensors.get(key)  # the hot path of every put: kept short on purpose
        if old is None:
            delta = tensor.data.nbytes + KEY_OVERHEAD + len(key)
        else:
            delta = tensor.data.nbytes - old.data.nbytes
        if self.max_bytes and self.used_bytes + delta > self.max_bytes:
            self.reserve(delta)  # raises StoreFullError
        self.tensors[key] = tensor
        self.used_bytes += delta
        if old is not None:
            self.allocator.release(old.data)

    def admit_put(self, kind: Kind, key: str, nbytes: int) -> None:
        """Raise :class:`StoreFullError` unless a value of ``nbytes`` bytes put under ``key``
        would fit (replacing what the key holds): checked before its payload is received."""
        if self.max_bytes:
            old = self._table(kind).get(key)
            self.reserve(KEY_OVERHEAD + len(key) + nbytes, self.cost(key, old))

    def put_dataset(self, name: str, dataset: StoredDataset) -> None:
        self._set(self.datasets, name, dataset)

    def append_to_list(self, name: str, item: str) -> int:
        """Append a dataset name; returns the list's new length. A list holds at most
        ``MAX_LIST_LENGTH`` names (BadArgumentError beyond)."""
        items = self.lists.get(name)
        if items is not None and len(items) >= MAX_LIST_LENGTH:
            raise BadArgumentError(f"list {name!r} holds {len(items)} names, the limit is {MAX_LIST_LENGTH} "
                                   f"(a list is read back in one reply of at most {MAX_FIELDS} fields)")
        cost = len(item) + ITEM_OVERHEAD + (0 if items is not None else KEY_OVERHEAD + len(name))
        self.reserve(cost)
        self.lists.setdefault(name, []).append(item)
        self.used_bytes += cost
        return len(self.lists[name])

    def list_length(self, name: str) -> int:
        """The list's length (0 when it does not exist, as in Redis)."""
        return len(self.lists.get(name, ()))

    def list_range(self, name: str, start: int, end: int) -> list[str]:
        """Items ``start..end`` inclusive, negative indices counting from the end (Redis LRANGE)."""
        items = self.lists.get(name, [])
        n = len(items)
        start = max(start + n if start < 0 else start, 0)
        end = end + n if end < 0 else end
        return items[start:min(end, n - 1) + 1] if start <= end else []


_NAMES = {Kind.TENSOR: "tensor", Kind.DATASET: "dataset", Kind.LIST: "list"}
