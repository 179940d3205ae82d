"""Request handlers: decode one request's fields, act on the shard store, build the reply.

No MPI here: the progress loop (``loop.py``) receives a :class:`Request` with its payload
parts already read, and sends the :class:`Reply` back.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..errors import BadArgumentError, MpistageError, ProtocolError
from ..protocol import (
    Header,
    Kind,
    Op,
    Status,
    TensorDesc,
    WireError,
    decode_i64,
    decode_key,
    unpack_metadata,
)
from .store import ShardStore, StoredDataset, StoredTensor


@dataclass(slots=True)
class Request:
    """One decoded request: the link it came on (a :class:`~mpistage.server.links.ServerLink`),
    its sender's rank there, its header, fields and payload parts. ``fields`` view the request's
    own message (never a buffer the loop reuses)."""

    link: Any
    source: int
    header: Header
    fields: list[memoryview]
    payload: list[np.ndarray]


@dataclass(slots=True)
class Reply:
    """What goes back: a status, fields, and payload parts (one message each)."""

    status: int = Status.OK
    fields: list[bytes] = field(default_factory=list)
    payload: list[np.ndarray] = field(default_factory=list)

    @classmethod
    def error(cls, exc: MpistageError | WireError) -> Reply:
        status = exc.status if isinstance(exc, MpistageError) else Status.PROTOCOL_ERROR
        return cls(status, [str(exc).encode()])


#: A handler returns a Reply now, or None when the reply will be sent later (deferred work).
Handler = Callable[[Request], "Reply | None"]


def expect_fields(req: Request, n: int) -> list[memoryview]:
    if len(req.fields) != n:
        raise ProtocolError(f"{Op(req.header.code).name} takes {n} fields, got {len(req.fields)}")
    return req.fields


def decode_kind(f: memoryview) -> Kind:
    if len(f) != 1 or f[0] not in Kind._value2member_map_:
        raise ProtocolError("the kind field must be one byte: T, D, L, M, S or *")
    return Kind(f[0])


def tensor_from_parts(desc: TensorDesc, parts: list[np.ndarray], index: int) -> tuple[StoredTensor, int]:
    """The stored tensor for ``desc``, taking its bytes from ``parts[index]`` when non-empty;
    returns it and the index of the next part."""
    if desc.nbytes == 0:
        return StoredTensor(desc, np.empty(0, np.uint8)), index
    if index >= len(parts):
        raise BadArgumentError(f"payload is missing: the descriptor says {desc.nbytes} bytes")
    part = parts[index]
    if part.nbytes != desc.nbytes:
        raise BadArgumentError(
            f"payload of {part.nbytes} bytes does not match dtype {desc.dtype} and shape "
            f"{desc.shape} ({desc.nbytes} bytes)")
    return StoredTensor(desc, part), index + 1


def check_all_parts_used(parts: list[np.ndarray], used: int) -> None:
    if used != len(parts):
        raise BadArgumentError(f"{len(parts) - used} payload parts more than the descriptors need")


def tensor_reply(tensors: list[StoredTensor], fields: list[bytes]) -> Reply:
    return Reply(Status.OK, fields, [t.data for t in tensors if t.nbytes])


class StoreHandlers:
    """The handlers of the store's operations, bound to one :class:`ShardStore`."""

    def __init__(self, store: ShardStore) -> None:
        self.store = store

    def table(self) -> dict[int, Handler]:
        return {
            Op.PUT_TENSOR: self.put_tensor,
            Op.GET_TENSOR: self.get_tensor,
            Op.DELETE: self.delete,
            Op.COPY: self.copy,
            Op.RENAME: self.rename,
            Op.EXISTS: self.exists,
            Op.PUT_DATASET: self.put_dataset,
            Op.GET_DATASET: self.get_dataset,
            Op.LIST_APPEND: self.list_append,
            Op.LIST_LENGTH: self.list_length,
            Op.LIST_RANGE: self.list_range,
        }

    def admit(self, req: Request) -> list[int]:
        """The sizes of the payload parts a request may carry, from its fields, before anything is
        received; raises (StoreFullError, a malformed field...) to refuse it. Puts are checked
        against the memory cap on their announced size."""
        code = req.header.code
        if code == Op.PUT_TENSOR:
            key_f, desc_f = expect_fields(req, 2)
            key, desc = decode_key(key_f), TensorDesc.unpack(desc_f)
            self.store.admit_put(Kind.TENSOR, key, desc.nbytes)
            return [desc.nbytes]
        if code == Op.PUT_DATASET:
            name, _, members = self._dataset_fields(req)
            sizes = [desc.nbytes for _, desc in members]
            self.store.admit_put(Kind.DATASET, name, sum(sizes) + sum(len(n) for n, _ in members))
            return sizes
        return [req.header.payload_nbytes]

    @staticmethod
    def _dataset_fields(req: Request) -> tuple[str, bytes, list[tuple[str, TensorDesc]]]:
        if len(req.fields) < 2 or len(req.fields) % 2:
            raise ProtocolError("PUT_DATASET takes a name, metadata, then (tensor name, descriptor) pairs")
        name = decode_key(req.fields[0])
        metadata = bytes(req.fields[1])
        unpack_metadata(metadata)  # validate now, so a bad dataset is never stored
        members = [(decode_key(n), TensorDesc.unpack(d)) for n, d in zip(req.fields[2::2], req.fields[3::2],
                                                                           strict=True)]
        return name, metadata, members

    def put_tensor(self, req: Request) -> Reply:
        key_f, desc_f = expect_fields(req, 2)
        key, desc = decode_key(key_f), TensorDesc.unpack(desc_f)
        tensor, used = tensor_from_parts(desc, req.payload, 0)
        check_all_parts_used(req.payload, used)
        self.store.put_tensor(key, tensor)
        return Reply()

    def get_tensor(self, req: Request) -> Reply:
        (key_f,) = expect_fields(req, 1)
        tensor = self.store.get(Kind.TENSOR, decode_key(key_f))
        return tensor_reply([tensor], [tensor.desc.pack()])

    def delete(self, req: Request) -> Reply:
        kind_f, key_f = expect_fields(req, 2)
        self.store.delete(decode_kind(kind_f), decode_key(key_f))
        return Reply()

    def copy(self, req: Request) -> Reply:
        kind_f, src_f, dst_f = expect_fields(req, 3)
        self.store.copy(decode_kind(kind_f), decode_key(src_f), decode_key(dst_f))
        return Reply()

    def rename(self, req: Request) -> Reply:
        kind_f, src_f, dst_f = expect_fields(req, 3)
        self.store.rename(decode_kind(kind_f), decode_key(src_f), decode_key(dst_f))
        return Reply()

    def exists(self, req: Request) -> Reply:
        kind_f, key_f = expect_fields(req, 2)
        return Reply(fields=[bytes([self.store.exists(decode_kind(kind_f), decode_key(key_f))])])

    def put_dataset(self, req: Request) -> Reply:
        name, metadata, members = self._dataset_fields(req)
        tensors: dict[str, StoredTensor] = {}
        used = 0
        for tname, desc in members:
            if tname in tensors:
                raise BadArgumentError(f"dataset {name!r} names tensor {tname!r} twice")
            tensors[tname], used = tensor_from_parts(desc, req.payload, used)
        check_all_parts_used(req.payload, used)
        self.store.put_dataset(name, StoredDataset(tensors, metadata))
        return Reply()

    def get_dataset(self, req: Request) -> Reply:
        (name_f,) = expect_fields(req, 1)
        name = decode_key(name_f)
        ds = self.store.get(Kind.DATASET, name)
        fields = [name.encode(), ds.metadata]
        for tname, t in ds.tensors.items():
            fields += [tname.encode(), t.desc.pack()]
        return tensor_reply(list(ds.tensors.values()), fields)

    def list_append(self, req: Request) -> Reply:
        list_f, item_f = expect_fields(req, 2)
        length = self.store.append_to_list(decode_key(list_f), decode_key(item_f))
        return Reply(fields=[length.to_bytes(8, "little")])

    def list_length(self, req: Request) -> Reply:
        (list_f,) = expect_fields(req, 1)
        length = self.store.list_length(decode_key(list_f))
        return Reply(fields=[length.to_bytes(8, "little")])

    def list_range(self, req: Request) -> Reply:
        list_f, start_f, end_f = expect_fields(req, 3)
        items = self.store.list_range(decode_key(list_f), decode_i64(start_f, "start"),
                                      decode_i64(end_f, "end"))
        return Reply(fields=[s.encode() for s in items])


# ---------------------------------------------------------------- server management (SmartRedis)

#: The largest run deadline a setting may give, in ms (the wire's u32 of RUN_MODEL's deadline).
MAX_MODEL_TIMEOUT_MS = 2**32 - 1
#: Redis's memory units (``CONFIG SET maxmemory 2gb``): k, m, g are powers of 1000, kb, mb, gb of 1024.
_MEMORY_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1024, "m": 1000**2, "mb": 1024**2, "g": 1000**3, "gb": 1024**3}


class EngineAdmin(Protocol):
    """What the management handlers need of the inference engine (``engine.InferenceEngine``)."""

    registry: Any  # .models and .scripts: name -> entry
    runtimes: Any  # .options: the engine's RuntimeOptions (replaced, never changed in place)

    def delete(self, kind: Kind, name: str) -> Reply: ...


def parse_memory(text: str) -> int:
    """Bytes of a Redis memory setting (``1000000``, ``100mb``, ``2gb``, ``0``: no cap)."""
    m = re.fullmatch(r"\s*(\d+)\s*([a-z]*)\s*", text.lower())
    if not m or m.group(2) not in _MEMORY_UNITS:
        raise BadArgumentError(f"maxmemory takes bytes, or a number with k, kb, m, mb, g or gb, not {text!r}")
    return int(m.group(1)) * _MEMORY_UNITS[m.group(2)]


def parse_timeout_ms(text: str) -> float:
    """Seconds of a ``model-timeout`` setting given in milliseconds (as ``SR_MODEL_TIMEOUT``)."""
    try:
        ms = int(text.strip())
    except ValueError:
        raise BadArgumentError(f"model-timeout takes a whole number of milliseconds, not {text!r}") from None
    if not 0 < ms <= MAX_MODEL_TIMEOUT_MS:
        raise BadArgumentError(f"model-timeout must be 1..{MAX_MODEL_TIMEOUT_MS} ms, not {ms}")
    return ms / 1000


class AdminHandlers:
    """FLUSH, CONFIG_GET and CONFIG_SET of one shard (SmartRedis's ``flush_db``, ``config_get``,
    ``config_set``; docs/smartredis.md, "Server settings").

    FLUSH removes every key of every kind on the shard: tensors, datasets, lists, and the
    engine's models and scripts (RedisAI's keys are Redis keys, which FLUSHDB removes); a run
    still waiting for a removed model fails with KeyNotFoundError. The settings are
    ``maxmemory`` (bytes, 0: no cap; settable, Redis's units), ``model-timeout`` (ms, the
    deadline of a run whose request carries none; settable) and, read-only, ``shards`` and
    ``shard``. An unknown or read-only name given to CONFIG_SET raises BadArgumentError."""

    SETTABLE = ("maxmemory", "model-timeout")

    def __init__(self, shard: int, nshards: int, store: ShardStore, engine: EngineAdmin) -> None:
        self.shard, self.nshards = shard, nshards
        self.store = store
        self.engine = engine

    def table(self) -> dict[int, Handler]:
        return {Op.FLUSH: self.flush, Op.CONFIG_GET: self.config_get, Op.CONFIG_SET: self.config_set}

    def settings(self) -> dict[str, str]:
        """Every setting by name, as text (Redis's CONFIG GET answers strings)."""
        return {"maxmemory": str(self.store.max_bytes),
                "model-timeout": str(round(self.engine.runtimes.options.model_timeout_s * 1000)),
                "shards": str(self.nshards), "shard": str(self.shard)}

    def flush(self, req: Request) -> Reply:
        expect_fields(req, 0)
        self.store.remove_all()
        for name in list(self.engine.registry.models):
            self.engine.delete(Kind.MODEL, name)
        for name in list(self.engine.registry.scripts):
            self.engine.delete(Kind.SCRIPT, name)
        return Reply()

    def config_get(self, req: Request) -> Reply:
        """Fields: a glob (``*``, ``max*``), matched without regard to case, as Redis does. Reply:
        (name, value) field pairs of the settings it matches (none: no fields)."""
        (pattern_f,) = expect_fields(req, 1)
        pattern = decode_key(pattern_f).lower()
        fields: list[bytes] = []
        for name, value in self.settings().items():
            if fnmatch.fnmatchcase(name, pattern):
                fields += [name.encode(), value.encode()]
        return Reply(fields=fields)

    def config_set(self, req: Request) -> Reply:
        """Fields: name, value (UTF-8). ``maxmemory`` below what the shard holds keeps what it
        holds and refuses puts (StoreFullError) until enough is deleted."""
        name_f, value_f = expect_fields(req, 2)
        name, value = decode_key(name_f).lower(), decode_key(value_f)
        if name == "maxmemory":
            self.store.max_bytes = parse_memory(value)
        elif name == "model-timeout":
            runtimes = self.engine.runtimes
            runtimes.options = dataclasses.replace(runtimes.options, model_timeout_s=parse_timeout_ms(value))
        elif name in self.settings():
            raise BadArgumentError(f"config_set: {name!r} is read-only (settable: {', '.join(self.SETTABLE)})")
        else:
            raise BadArgumentError(f"config_set: unknown setting {name!r} (settable: {', '.join(self.SETTABLE)})")
        return Reply()
