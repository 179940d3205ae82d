"""``Client``: the public API, with SmartRedis's names and semantics.

Knows keys, dtypes and shapes; routes each key to its shard; never knows how the bytes travel.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ._mpi.connection import ServerConnection
from ._mpi.process import get_connection
from .client_engine import EngineClientMixin
from .dataset import Dataset
from .errors import BadArgumentError, KeyNotFoundError
from .protocol import (
    Kind,
    Op,
    TensorDesc,
    as_bytes_view,
    decode_key,
    describe,
    encode_tensor,
    key_field,
    pack_metadata,
    unpack_metadata,
)
from .router import shard_of


def _i64(value: int) -> bytes:
    return int(value).to_bytes(8, "little", signed=True)


class Client(EngineClientMixin):
    """A connection to the mpistage servers.

    ``Client()`` finds the servers by itself in an MPMD job; otherwise give ``address`` (a
    connection file) or set ``MPISTAGE_ADDRESS``. All ``Client`` objects of a process share one
    connection; the first one is collective over the application ranks (``comm``).
    ``cluster`` is accepted for SmartRedis compatibility and ignored.
    """

    def __init__(self, cluster: bool | None = None, address: str | None = None,
                 logger_name: str = "mpistage", comm: Any = None) -> None:
        self.logger_name = logger_name
        self._conn: ServerConnection = get_connection(address, comm)
        self._put_prefix = os.environ.get("SSKEYOUT", "").split(",")[0]
        self._get_prefixes = [p for p in os.environ.get("SSKEYIN", "").split(",") if p]
        self._get_prefix = self._get_prefixes[0] if self._get_prefixes else ""
        self._prefix_use = {Kind.TENSOR: True, Kind.DATASET: True, Kind.LIST: True,
                            Kind.MODEL: False, Kind.SCRIPT: False}
        self._routes: dict[tuple[str, Kind, bool], tuple[bytes, int]] = {}

    # ------------------------------------------------------------ keys and routing
    @property
    def nshards(self) -> int:
        return self._conn.nshards

    def _route(self, name: str, kind: Kind, reading: bool) -> tuple[bytes, int]:
        """The key's bytes and its shard, cached (simulations reuse their keys every step)."""
        cache = self._routes
        hit = cache.get((name, kind, reading))
        if hit is None:
            key = self._key(name, kind, reading)
            if len(cache) > 65536:
                cache.clear()
            hit = cache[(name, kind, reading)] = (key.encode(), self._shard(key))
        return hit

    def _key(self, name: str, kind: Kind, reading: bool = True) -> str:
        if not isinstance(name, str):
            raise TypeError(f"a key must be a str, not {type(name).__name__}")
        prefix = (self._get_prefix if reading else self._put_prefix) if self._prefix_use.get(kind) else ""
        key = f"{prefix}.{name}" if prefix else name
        key_field(key)  # raises ValueError for an empty or over-long key
        return key

    def _shard(self, key: str) -> int:
        return shard_of(key, self._conn.nshards)

    def _call(self, op: Op, key: str, *more: bytes, payload: list[np.ndarray] = ()) -> list[memoryview]:
        return self._conn.request(self._shard(key), op, [key.encode(), *more], payload)

    def _keyed(self, op: Op, kind: Kind, key: str, *more: bytes) -> list[memoryview]:
        return self._conn.request(self._shard(key), op, [bytes([kind]), key.encode(), *more])

    # ------------------------------------------------------------ tensors
    def put_tensor(self, name: str, data: np.ndarray) -> None:
        """Store a numpy array under ``name`` (any supported dtype, any shape, any memory order).
        Raises TypeError for an unsupported dtype, StoreFullError when the shard is full."""
        if not isinstance(data, np.ndarray):
            raise TypeError(f"put_tensor takes a numpy.ndarray, not {type(data).__name__}")
        key, shard = self._route(name, Kind.TENSOR, False)
        desc, part = encode_tensor(data)
        self._conn.request(shard, Op.PUT_TENSOR, [key, desc], [part])

    def _put_array(self, key: str, data: np.ndarray) -> None:
        desc, part = encode_tensor(data)
        self._call(Op.PUT_TENSOR, key, desc, payload=[part])

    def _get(self, key: bytes, shard: int, make_target: Callable[[TensorDesc], np.ndarray]) -> np.ndarray:
        conn = self._conn
        with conn.lock:
            pending = conn.start(shard, Op.GET_TENSOR, [key], one_part_reply=True)
            header, fields = conn.finish(pending)
            desc = TensorDesc.unpack(fields[0])
            target = make_target(desc)
            conn.receive_payload(pending, header, fields, [as_bytes_view(target)])
        return target

    def get_tensor(self, name: str) -> np.ndarray:
        """The array stored under ``name``, in the memory order it was put with.
        Raises KeyNotFoundError when there is none."""
        return self._get(*self._route(name, Kind.TENSOR, True), _fresh)

    def unpack_tensor(self, name: str, result: np.ndarray) -> None:
        """Fill ``result`` (same shape and dtype as the stored tensor) in place.
        Raises BadArgumentError on a shape or dtype mismatch, KeyNotFoundError for a missing key."""
        if not isinstance(result, np.ndarray):
            raise TypeError("unpack_tensor fills a numpy.ndarray")

        def target(desc: TensorDesc) -> np.ndarray:
            if result.shape != desc.shape or result.dtype.newbyteorder("=") != desc.dtype.newbyteorder("="):
                raise BadArgumentError(
                    f"tensor {name!r} is {desc.dtype}{list(desc.shape)}, the result array is "
                    f"{result.dtype}{list(result.shape)}")
            fits = result.flags.f_contiguous if desc.order else result.flags.c_contiguous
            if fits and result.dtype.isnative:
                return result
            return np.empty(desc.shape, desc.dtype, order="F" if desc.order else "C")

        got = self._get(*self._route(name, Kind.TENSOR, True), target)
        if got is not result:
            result[...] = got

    def delete_tensor(self, name: str) -> None:
        """Raises KeyNotFoundError when ``name`` does not exist."""
        self._keyed(Op.DELETE, Kind.TENSOR, self._key(name, Kind.TENSOR, False))

    def copy_tensor(self, src_name: str, dest_name: str) -> None:
        """Copy a tensor to a new key (across shards when they differ)."""
        self._move(Kind.TENSOR, src_name, dest_name, Op.COPY)

    def rename_tensor(self, old_name: str, new_name: str) -> None:
        self._move(Kind.TENSOR, old_name, new_name, Op.RENAME)

    def tensor_exists(self, name: str) -> bool:
        return self._exists(Kind.TENSOR, self._key(name, Kind.TENSOR))

    def key_exists(self, key: str) -> bool:
        """True when ``key`` (taken as it is, no prefix) names a tensor, dataset or list."""
        return self._exists(Kind.ANY, key)

    def poll_tensor(self, name: str, poll_frequency_ms: int, num_tries: int) -> bool:
        return self._poll(lambda: self.tensor_exists(name), poll_frequency_ms, num_tries)

    def poll_key(self, key: str, poll_frequency_ms: int, num_tries: int) -> bool:
        return self._poll(lambda: self.key_exists(key), poll_frequency_ms, num_tries)

    def _exists(self, kind: Kind, key: str) -> bool:
        return bool(self._keyed(Op.EXISTS, kind, key)[0][0])

    @staticmethod
    def _poll(check: Callable[[], bool], poll_frequency_ms: int, num_tries: int) -> bool:
        for attempt in range(num_tries):
            if check():
                return True
            if attempt + 1 < num_tries:
                time.sleep(poll_frequency_ms / 1000)
        return False

    def _move(self, kind: Kind, src_name: str, dst_name: str, op: Op) -> None:
        """COPY or RENAME; the servers do it when both keys live on one shard, else the client."""
        src, dst = self._key(src_name, kind), self._key(dst_name, kind, False)
        if self._shard(src) == self._shard(dst):
            self._keyed(op, kind, src, dst.encode())
            return
        if kind == Kind.TENSOR:
            self._put_array(dst, self._get(src.encode(), self._shard(src), _fresh))
        elif kind == Kind.DATASET:
            self._put_dataset_as(dst, self._fetch_dataset(src))
        else:
            items = self._list_range(src, 0, -1)
            if self._exists(Kind.LIST, dst):
                self._keyed(Op.DELETE, Kind.LIST, dst)
            for item in items:
                self._call(Op.LIST_APPEND, dst, item.encode())
        if op == Op.RENAME:
            self._keyed(Op.DELETE, kind, src)

    # ------------------------------------------------------------ datasets
    def put_dataset(self, dataset: Dataset) -> None:
        """Store a Dataset (its tensors and metadata) under its name."""
        if not isinstance(dataset, Dataset):
            raise TypeError("put_dataset takes a mpistage.Dataset")
        self._put_dataset_as(self._key(dataset.get_name(), Kind.DATASET, False), dataset)

    def _put_dataset_as(self, key: str, dataset: Dataset) -> None:
        fields = [pack_metadata(*dataset.metadata_arrays())]
        payload = []
        for tname in dataset.get_tensor_names():
            desc, arr = describe(dataset.get_tensor(tname))
            fields += [key_field(tname), desc.pack()]
            payload.append(as_bytes_view(arr))
        self._call(Op.PUT_DATASET, key, *fields, payload=payload)

    def _fetch_dataset(self, key: str) -> Dataset:
        conn = self._conn
        with conn.lock:
            pending = conn.start(self._shard(key), Op.GET_DATASET, [key.encode()])
            header, fields = conn.finish(pending)
            scalars, strings = unpack_metadata(fields[1])
            tensors = {decode_key(n): _fresh(TensorDesc.unpack(d))
                       for n, d in zip(fields[2::2], fields[3::2], strict=True)}
            conn.receive_payload(pending, header, fields, [as_bytes_view(t) for t in tensors.values()])
        return Dataset.from_parts(decode_key(fields[0]), tensors, scalars, strings)

    def get_dataset(self, name: str) -> Dataset:
        """Raises KeyNotFoundError when there is no dataset ``name``."""
        ds = self._fetch_dataset(self._key(name, Kind.DATASET))
        ds.name = name
        return ds

    def delete_dataset(self, name: str) -> None:
        self._keyed(Op.DELETE, Kind.DATASET, self._key(name, Kind.DATASET, False))

    def copy_dataset(self, src_name: str, dest_name: str) -> None:
        self._move(Kind.DATASET, src_name, dest_name, Op.COPY)

    def rename_dataset(self, old_name: str, new_name: str) -> None:
        self._move(Kind.DATASET, old_name, new_name, Op.RENAME)

    def dataset_exists(self, name: str) -> bool:
        return self._exists(Kind.DATASET, self._key(name, Kind.DATASET))

    def poll_dataset(self, name: str, poll_frequency_ms: int, num_tries: int) -> bool:
        return self._poll(lambda: self.dataset_exists(name), poll_frequency_ms, num_tries)

    # ------------------------------------------------------------ aggregation lists
    def append_to_list(self, list_name: str, dataset: Dataset) -> None:
        """Append a dataset's name to an aggregation list (put the dataset itself first)."""
        if not isinstance(dataset, Dataset):
            raise TypeError("append_to_list takes a mpistage.Dataset")
        key = self._key(list_name, Kind.LIST, False)
        self._call(Op.LIST_APPEND, key, self._key(dataset.get_name(), Kind.DATASET, False).encode())

    def delete_list(self, list_name: str) -> None:
        """Delete the list (not the datasets it names)."""
        self._keyed(Op.DELETE, Kind.LIST, self._key(list_name, Kind.LIST, False))

    def copy_list(self, src_name: str, dest_name: str) -> None:
        self._move(Kind.LIST, src_name, dest_name, Op.COPY)

    def rename_list(self, src_name: str, dest_name: str) -> None:
        self._move(Kind.LIST, src_name, dest_name, Op.RENAME)

    def get_list_length(self, list_name: str) -> int:
        key = self._key(list_name, Kind.LIST)
        return int.from_bytes(self._call(Op.LIST_LENGTH, key)[0], "little")

    def poll_list_length(self, name: str, list_length: int, poll_frequency_ms: int, num_tries: int) -> bool:
        return self._poll(lambda: self.get_list_length(name) == list_length, poll_frequency_ms, num_tries)

    def poll_list_length_gte(self, name: str, list_length: int, poll_frequency_ms: int, num_tries: int) -> bool:
        return self._poll(lambda: self.get_list_length(name) >= list_length, poll_frequency_ms, num_tries)

    def poll_list_length_lte(self, name: str, list_length: int, poll_frequency_ms: int, num_tries: int) -> bool:
        return self._poll(lambda: self.get_list_length(name) <= list_length, poll_frequency_ms, num_tries)

    def _list_range(self, key: str, start: int, end: int) -> list[str]:
        return [decode_key(f) for f in self._call(Op.LIST_RANGE, key, _i64(start), _i64(end))]

    def get_datasets_from_list(self, list_name: str) -> list[Dataset]:
        return self.get_dataset_list_range(list_name, 0, -1)

    def get_dataset_list_range(self, list_name: str, start_index: int, end_index: int) -> list[Dataset]:
        """Datasets at positions ``start_index..end_index`` (inclusive; negative counts from the end)."""
        names = self._list_range(self._key(list_name, Kind.LIST), start_index, end_index)
        return [self._fetch_dataset(n) for n in names]

    # ------------------------------------------------------------ servers
    def get_server_info(self) -> list[dict[str, Any]]:
        """Per shard: keys, bytes used, requests served (and engine statistics)."""
        return [json.loads(bytes(self._conn.request(s, Op.INFO, [])[0]))
                for s in range(self._conn.nshards)]

    def save(self) -> list[str]:
        """Snapshot every shard to the servers' ``--snapshot`` directory; returns the files."""
        return [bytes(self._conn.request(s, Op.SAVE, [])[0]).decode() for s in range(self._conn.nshards)]

    def shutdown_servers(self) -> None:
        """Ask every shard to stop, then say goodbye: the servers stop accepting jobs and exit
        once every connected job (this one included) has said goodbye."""
        for s in range(self._conn.nshards):
            self._conn.request(s, Op.SHUTDOWN, [])
        self._conn.close()

    # ------------------------------------------------------------ ensembles (SmartRedis names)
    def set_data_source(self, source_id: str) -> None:
        """Read keys with prefix ``source_id`` (one of $SSKEYIN)."""
        if source_id not in self._get_prefixes:
            raise BadArgumentError(f"{source_id!r} is not in SSKEYIN ({self._get_prefixes})")
        self._get_prefix = source_id
        self._routes.clear()

    def use_tensor_ensemble_prefix(self, use_prefix: bool) -> None:
        self._prefix_use[Kind.TENSOR] = bool(use_prefix)
        self._routes.clear()

    def use_dataset_ensemble_prefix(self, use_prefix: bool) -> None:
        self._prefix_use[Kind.DATASET] = bool(use_prefix)
        self._routes.clear()

    def use_list_ensemble_prefix(self, use_prefix: bool) -> None:
        self._prefix_use[Kind.LIST] = bool(use_prefix)
        self._routes.clear()

    def use_model_ensemble_prefix(self, use_prefix: bool) -> None:
        self._prefix_use[Kind.MODEL] = bool(use_prefix)
        self._prefix_use[Kind.SCRIPT] = bool(use_prefix)
        self._routes.clear()


def _fresh(desc: TensorDesc) -> np.ndarray:
    return np.empty(desc.shape, desc.dtype, order="F" if desc.order else "C")


__all__ = ["Client", "KeyNotFoundError"]
