"""The MPI backend: the wire protocol of docs/protocol.md and docs/engine.md over the process's
one :class:`~mpistage._mpi.connection.ServerConnection`. Routes each key to its shard (cached:
simulations reuse their keys every step), encodes every request, and does what the servers cannot
do alone (copying or renaming across shards, setting a model on every shard all or nothing)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._mpi.connection import PendingReply, ServerConnection
from .._mpi.process import close_connection, get_connection
from ..backoff import wait_until
from ..dataset import Dataset
from ..errors import KeyNotFoundError, MpistageError
from ..protocol import (
    U32,
    U64,
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
from ..router import shard_of
from .base import Backend, EngineBackend, Into, ModelSpec, RunHandle, ServerAdmin, StoreBackend

ROUTE_CACHE_SIZE = 65536


def create(address: str | None, comm: Any) -> Backend:
    """The registry's factory: this process's connection (opened on first use)."""
    conn = get_connection(address, comm)
    return Backend("mpi", MpiStore(conn), MpiEngine(conn))


def _fresh(desc: TensorDesc) -> np.ndarray:
    return np.empty(desc.shape, desc.dtype, order="F" if desc.order else "C")


def _i64(value: int) -> bytes:
    return int(value).to_bytes(8, "little", signed=True)


def _flag(fields: list[memoryview]) -> bool:
    return bool(fields[0][0])


class _Routed:
    """A key's bytes and shard, cached per key."""

    def __init__(self, conn: ServerConnection) -> None:
        self._conn = conn
        self._routes: dict[str, tuple[bytes, int]] = {}

    @property
    def nshards(self) -> int:
        """How many shards the servers are."""
        return self._conn.nshards

    def _route(self, key: str) -> tuple[bytes, int]:
        hit = self._routes.get(key)
        if hit is None:
            if len(self._routes) >= ROUTE_CACHE_SIZE:
                self._routes.clear()
            hit = self._routes[key] = (key_field(key), shard_of(key, self._conn.nshards))
        return hit


class MpiStore(_Routed, StoreBackend, ServerAdmin):
    """The store half over the wire (methods documented in :class:`~mpistage.backends.base.StoreBackend`)."""

    def put_tensor(self, key: str, array: np.ndarray) -> None:
        raw, shard = self._route(key)
        desc, part = encode_tensor(array)
        self._conn.request(shard, Op.PUT_TENSOR, [raw, desc], [part])

    def get_tensor(self, key: str, into: Into | None = None) -> np.ndarray:
        raw, shard = self._route(key)
        make = into or _fresh

        def targets(fields: list[memoryview]) -> tuple[np.ndarray, list[np.ndarray]]:
            target = make(TensorDesc.unpack(fields[0]))
            return target, [as_bytes_view(target)]

        return self._conn.fetch(shard, Op.GET_TENSOR, [raw], targets, one_part_reply=True)

    def exists(self, kind: Kind, key: str) -> bool:
        raw, shard = self._route(key)
        return self._conn.request(shard, Op.EXISTS, [bytes([kind]), raw], read=_flag)

    def delete(self, kind: Kind, key: str) -> None:
        raw, shard = self._route(key)
        self._conn.request(shard, Op.DELETE, [bytes([kind]), raw])

    def copy(self, kind: Kind, src: str, dst: str, rename: bool = False) -> None:
        """The servers copy or rename when both keys live on one shard, else the client does."""
        (src_raw, src_shard), (dst_raw, dst_shard) = self._route(src), self._route(dst)
        op = Op.RENAME if rename else Op.COPY
        if src_shard == dst_shard:
            self._conn.request(src_shard, op, [bytes([kind]), src_raw, dst_raw])
            return
        if kind == Kind.TENSOR:
            self.put_tensor(dst, self.get_tensor(src))
        elif kind == Kind.DATASET:
            self.put_dataset(dst, self.get_dataset(src))
        else:
            items = self.list_range(src, 0, -1)
            if not items and not self.exists(Kind.LIST, src):
                raise KeyNotFoundError(f"list {src!r} does not exist")
            if self.exists(Kind.LIST, dst):
                self.delete(Kind.LIST, dst)
            for item in items:
                self.list_append(dst, item)
        if rename:
            self.delete(kind, src)

    def put_dataset(self, key: str, dataset: Dataset) -> None:
        raw, shard = self._route(key)
        fields = [raw, pack_metadata(*dataset.metadata_arrays())]
        payload = []
        for tname in dataset.get_tensor_names():
            desc, arr = describe(dataset.get_tensor(tname))
            fields += [key_field(tname), desc.pack()]
            payload.append(as_bytes_view(arr))
        self._conn.request(shard, Op.PUT_DATASET, fields, payload)

    def get_dataset(self, key: str) -> Dataset:
        raw, shard = self._route(key)

        def targets(fields: list[memoryview]) -> tuple[Dataset, list[np.ndarray]]:
            scalars, strings = unpack_metadata(fields[1])
            tensors = {decode_key(n): _fresh(TensorDesc.unpack(d))
                       for n, d in zip(fields[2::2], fields[3::2], strict=True)}
            ds = Dataset.from_parts(decode_key(fields[0]), tensors, scalars, strings)
            return ds, [as_bytes_view(t) for t in tensors.values()]

        return self._conn.fetch(shard, Op.GET_DATASET, [raw], targets)

    def list_append(self, key: str, item: str) -> None:
        raw, shard = self._route(key)
        self._conn.request(shard, Op.LIST_APPEND, [raw, key_field(item)])

    def list_length(self, key: str) -> int:
        raw, shard = self._route(key)
        return self._conn.request(shard, Op.LIST_LENGTH, [raw], read=lambda f: int.from_bytes(f[0], "little"))

    def list_range(self, key: str, start: int, end: int) -> list[str]:
        raw, shard = self._route(key)
        return self._conn.request(shard, Op.LIST_RANGE, [raw, _i64(start), _i64(end)],
                                  read=lambda fields: [decode_key(f) for f in fields])

    def server_info(self) -> list[dict[str, Any]]:
        return [self._conn.request(s, Op.INFO, [], read=lambda f: json.loads(bytes(f[0])))
                for s in range(self._conn.nshards)]

    def save(self) -> list[str]:
        return [self._conn.request(s, Op.SAVE, [], read=lambda f: bytes(f[0]).decode())
                for s in range(self._conn.nshards)]

    def shutdown_servers(self) -> None:
        for s in range(self._conn.nshards):
            self._conn.request(s, Op.SHUTDOWN, [])
        close_connection()

    def bridge(self, op: Op, name: str, spec: dict[str, Any] | None) -> list[dict[str, Any]]:
        """See :class:`~mpistage.backends.base.ServerBridge`."""
        fields = [key_field(name)] + ([json.dumps(spec).encode()] if spec is not None else [])
        pendings = [self._conn.start(s, op, fields) for s in range(self._conn.nshards)]
        replies: list[dict[str, Any]] = []
        error: MpistageError | None = None
        for pending in pendings:
            try:
                replies.append(self._conn.finish(pending, read=lambda f: json.loads(bytes(f[0]))))
            except MpistageError as exc:
                error = error or exc
        if error is not None:
            raise error
        return replies

    def flush(self) -> None:
        """Nothing to do: every put is in the store when it returns."""

    def flush_db(self, shards: Sequence[int]) -> None:
        for s in shards:
            self._conn.request(s, Op.FLUSH, [])

    def config_get(self, shard: int, pattern: str) -> dict[str, str]:
        def pairs(fields: list[memoryview]) -> dict[str, str]:
            text = [bytes(f).decode() for f in fields]
            return dict(zip(text[::2], text[1::2], strict=True))

        return self._conn.request(shard, Op.CONFIG_GET, [pattern.encode()], read=pairs)

    def config_set(self, shards: Sequence[int], name: str, value: str) -> None:
        for s in shards:
            self._conn.request(s, Op.CONFIG_SET, [name.encode(), value.encode()])

    def close(self) -> None:
        close_connection()


class MpiRunHandle(RunHandle):
    """A RUN_MODEL/RUN_SCRIPT request whose reply has not been read; its ``seq`` stays reserved
    until it has been."""

    def __init__(self, conn: ServerConnection, pending: PendingReply, what: str) -> None:
        self._conn = conn
        self._pending = pending
        self.what = what
        self._finished = False
        self._error: MpistageError | None = None

    def done(self) -> bool:
        return self._finished or self._conn.test(self._pending)

    def wait(self, timeout: float | None = None) -> None:
        """Polls with the one backoff (``mpistage.backoff``), so waiting ranks leave the cores to
        the servers."""
        if not self._finished:
            if not wait_until(lambda: self._conn.test(self._pending), timeout):
                raise TimeoutError(f"{self.what} has not finished within {timeout} s")
            self._finished = True
            try:
                self._conn.finish(self._pending)
            except MpistageError as exc:
                self._error = exc
        if self._error is not None:
            raise self._error


def _count(n_inputs: int, timeout_ms: int) -> bytes:
    """A run's count field: u32 n_inputs, then u32 timeout_ms when the call has a deadline."""
    return U32.pack(n_inputs) + (U32.pack(timeout_ms) if timeout_ms else b"")


class MpiEngine(_Routed, EngineBackend):
    """The engine half over the wire (methods documented in
    :class:`~mpistage.backends.base.EngineBackend`): models and scripts live on every shard; a
    run goes to the shard of its first input."""

    def set_model(self, key: str, data: bytes, spec: ModelSpec) -> None:
        fields = [key_field(key), spec.backend.encode(), spec.device.encode(), spec.tag.encode(),
                  U64.pack(spec.batch_size), U64.pack(spec.min_batch_size), U64.pack(spec.min_batch_timeout)]
        payload = [np.frombuffer(data, np.uint8)]
        self._set_everywhere(Op.SET_MODEL, Kind.MODEL, key, [(fields, payload)] * self._conn.nshards)

    def set_script(self, key: str, source: str, device: str) -> None:
        fields = [key_field(key), device.encode()]
        payload = [np.frombuffer(source.encode(), np.uint8)]
        self._set_everywhere(Op.SET_SCRIPT, Kind.SCRIPT, key, [(fields, payload)] * self._conn.nshards)

    def _set_everywhere(self, op: Op, kind: Kind, key: str,
                        per_shard: Sequence[tuple[list[bytes], Sequence[np.ndarray]]]) -> None:
        """Send ``per_shard[i]`` to shard ``i`` at once and collect every reply. All or nothing:
        when some shards fail and others succeed, the name is removed from every shard (those
        that failed may hold an older version), then the first error is raised; when all fail,
        nothing changed."""
        outcomes = self._conn.request_all([(s, op, fields, payload)
                                           for s, (fields, payload) in enumerate(per_shard)])
        errors = [e for e in outcomes if e is not None]
        if not errors:
            return
        if len(errors) < len(outcomes):
            self._delete_everywhere(kind, key, missing_ok=True)
        raise errors[0]

    def _delete_everywhere(self, kind: Kind, key: str, missing_ok: bool = False) -> None:
        fields = [bytes([kind]), key_field(key)]
        outcomes = self._conn.request_all([(s, Op.DELETE, fields, ()) for s in range(self._conn.nshards)])
        errors = [e for e in outcomes if e is not None and not (missing_ok and isinstance(e, KeyNotFoundError))]
        if errors:
            raise errors[0]

    def get_model(self, key: str) -> bytes:
        raw, shard = self._route(key)

        def targets(fields: list[memoryview]) -> tuple[np.ndarray, list[np.ndarray]]:
            data = np.empty(U64.unpack(fields[0])[0], np.uint8)
            return data, [data]

        return self._conn.fetch(shard, Op.GET_MODEL, [raw], targets).tobytes()

    def get_script(self, key: str) -> str:
        raw, shard = self._route(key)
        return self._conn.request(shard, Op.GET_SCRIPT, [raw], read=lambda f: bytes(f[0]).decode())

    def delete_code(self, kind: Kind, key: str) -> None:
        self._delete_everywhere(kind, key)

    def model_exists(self, key: str) -> bool:
        raw, shard = self._route(key)
        return self._conn.request(shard, Op.EXISTS, [bytes([Kind.MODEL]), raw], read=_flag)

    def run_model(self, key: str, inputs: Sequence[str], outputs: Sequence[str], timeout_ms: int = 0) -> RunHandle:
        fields = [key_field(key), _count(len(inputs), timeout_ms), *map(key_field, inputs), *map(key_field, outputs)]
        return self._run(inputs[0], Op.RUN_MODEL, fields, f"run_model({key!r})")

    def run_script(self, key: str, function: str, inputs: Sequence[str],
                   outputs: Sequence[str], timeout_ms: int = 0) -> RunHandle:
        fields = [key_field(key), function.encode(), _count(len(inputs), timeout_ms),
                  *map(key_field, inputs), *map(key_field, outputs)]
        return self._run(inputs[0], Op.RUN_SCRIPT, fields, f"run_script({key!r}, {function!r})")

    def _run(self, first_input: str, op: Op, fields: list[bytes], what: str) -> RunHandle:
        _, shard = self._route(first_input)
        return MpiRunHandle(self._conn, self._conn.start(shard, op, fields), what)
