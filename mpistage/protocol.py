"""The wire protocol shared by the client and the server ranks.

Every client message is a byte buffer with the layout documented in ``docs/protocol.md``;
nothing here ever unpickles. This module is the only place that packs or unpacks a header,
a field list or a tensor descriptor: the client, the server and the tests all use it.
"""

from __future__ import annotations

import functools
import os
import struct
from enum import IntEnum
from typing import NamedTuple

import numpy as np

# Status (the reply codes) is defined with the exceptions it maps to and re-exported here, where the
# rest of the wire vocabulary is (the Fortran generator reads protocol.Status).
from .errors import ProtocolError
from .errors import Status as Status

PROTOCOL_VERSION = 1
REQUEST_MAGIC = b"MPSQ"
REPLY_MAGIC = b"MPSR"

#: MPI tags. Requests travel on ``TAG_REQUEST``; a request's point-to-point payload parts follow
#: on ``TAG_PAYLOAD + seq`` (:func:`payload_tag`), so a payload is matched to the request it was
#: announced with, never by arrival order. A reply (and its payload) travels on the request's
#: ``seq``, which lies in ``[SEQ_MIN, SEQ_MAX]``. Every tag stays within 32767, the smallest
#: ``MPI_TAG_UB`` the MPI standard allows.
TAG_REQUEST = 1
TAG_PAYLOAD = 16384
SEQ_MIN = 16
SEQ_MAX = 16383

#: Tags and values of session setup (docs/protocol.md, "Session setup"): the MPMD world split's
#: intercommunicator, widening a connected link to every shard, shard 0 telling the other shards
#: that a job is joining, and the purpose a client group's hello carries.
INTERCOMM_TAG = 4242
WIDEN_TAG = 4243
JOIN_TAG = 4244
#: Connect mode: the hello (version, purpose, the deployment secret) and shard 0's verdict travel
#: point-to-point on the first intercommunicator with this tag; a hello is at most this long.
HELLO_TAG = 4245
HELLO_MAX_BYTES = 1024
PURPOSE_CLIENT = 0
PURPOSE_STOP = 1
#: re-arm shard 0's accept (answered, nothing else happens): MPI_Comm_accept fails for good after
#: ~5 min idle on Open MPI 4 (a PMIx lookup times out), so the servers re-arm it themselves (server/wake.py)
PURPOSE_REARM = 2
ROLE_SERVER = 0
ROLE_APP = 1

#: Header flag: the payload lies in the client's slot of the shard's one-sided window instead of
#: following as messages (single-part payloads of at least RMA_MIN_BYTES only).
FLAG_RMA = 1
RMA_MIN_BYTES = 256 << 10
#: Header flag: the single payload part travels inside the message, as one extra, last field.
#: On a request that expects a one-part reply (GET_TENSOR): the server may answer that way.
FLAG_INLINE = 2
INLINE_MAX_BYTES = 3072  # with the header and fields, under Open MPI's 4 KiB shared-memory eager limit

MAX_KEY_BYTES = 1024
MAX_FIELDS = 4096
MAX_HEADER_BYTES = 1 << 20
#: Limits on what a descriptor may describe: dimensions, and bytes of one tensor (a shape whose
#: product overflows, or is beyond any memory, is refused before anything is allocated).
MAX_DIMS = 64
MAX_TENSOR_BYTES = 1 << 48
#: Largest payload a request may announce (all parts together).
MAX_PAYLOAD_BYTES = 1 << 48
#: MPI's count is a C int: a payload part larger than this travels as several messages of at most
#: this many bytes each, in order, on the part's tag (the receiver advances by each one's size).
MAX_MESSAGE_BYTES = (1 << 31) - 1
KNOWN_FLAGS = FLAG_RMA | FLAG_INLINE

HEADER = struct.Struct("<4sHHIIIIQ")
HEADER_SIZE = HEADER.size  # 32 bytes
FIELD_LEN = struct.Struct("<I")
DESC_HEAD = struct.Struct("<BBH")
DIM = struct.Struct("<Q")


def payload_tag(seq: int) -> int:
    """The tag a request's point-to-point payload parts travel on (client or shard to shard)."""
    return TAG_PAYLOAD + seq


def is_payload_tag(tag: int) -> bool:
    """True for the tags :func:`payload_tag` gives."""
    return TAG_PAYLOAD + SEQ_MIN <= tag <= TAG_PAYLOAD + SEQ_MAX


def message_limit() -> int:
    """The largest message a sender here makes of a payload part: ``MAX_MESSAGE_BYTES``, or less
    with ``MPISTAGE_MESSAGE_BYTES`` set (a testing knob: receivers take any split)."""
    text = os.environ.get("MPISTAGE_MESSAGE_BYTES", "")
    return min(MAX_MESSAGE_BYTES, max(1, int(text))) if text.strip() else MAX_MESSAGE_BYTES


def chunks(nbytes: int, limit: int = MAX_MESSAGE_BYTES) -> list[tuple[int, int]]:
    """``(offset, size)`` of the messages a part of ``nbytes`` travels as (none for 0 bytes)."""
    return [(off, min(limit, nbytes - off)) for off in range(0, nbytes, limit)]


class Op(IntEnum):
    """Operation codes (header ``op``)."""

    BYE = 1
    INFO = 2
    SAVE = 3
    SHUTDOWN = 4
    FLUSH = 5  # every key of every kind on the shard removed (SmartRedis flush_db)
    CONFIG_GET = 6  # a server setting by name (SmartRedis config_get)
    CONFIG_SET = 7  # change a server setting that may change while serving (SmartRedis config_set)
    PUT_TENSOR = 10
    GET_TENSOR = 11
    DELETE = 12
    COPY = 13
    RENAME = 14
    EXISTS = 15
    PUT_DATASET = 20
    GET_DATASET = 21
    LIST_APPEND = 30
    LIST_LENGTH = 31
    LIST_RANGE = 32
    SET_MODEL = 50
    GET_MODEL = 51
    RUN_MODEL = 53
    SET_SCRIPT = 54
    GET_SCRIPT = 55
    RUN_SCRIPT = 57
    BRIDGE_EXPORT = 60  # the shard exports chosen keys to an ADIOS2 file or stream at each step
    BRIDGE_INGEST = 61  # the shard reads an ADIOS2 stream into its store
    BRIDGE_STOP = 62  # ends an export or ingest


#: The operations whose requests carry a payload; any other announcing one is malformed.
PAYLOAD_OPS = frozenset({Op.PUT_TENSOR, Op.PUT_DATASET, Op.SET_MODEL, Op.SET_SCRIPT})


class Kind(IntEnum):
    """What a key names, for DELETE / COPY / RENAME / EXISTS (one byte field)."""

    TENSOR = ord("T")
    DATASET = ord("D")
    LIST = ord("L")
    MODEL = ord("M")
    SCRIPT = ord("S")
    ANY = ord("*")


ORDER_C = 0
ORDER_F = 1

DTYPE_CODES: dict[np.dtype, int] = {
    np.dtype("float32"): 1,
    np.dtype("float64"): 2,
    np.dtype("int8"): 3,
    np.dtype("int16"): 4,
    np.dtype("int32"): 5,
    np.dtype("int64"): 6,
    np.dtype("uint8"): 7,
    np.dtype("uint16"): 8,
}
_NATIVE_CODES = dict(DTYPE_CODES)
CODE_DTYPES: dict[int, np.dtype] = {code: dt.newbyteorder("<") for dt, code in DTYPE_CODES.items()}


#: A buffer does not follow the documented layout: the same class as
#: :class:`mpistage.errors.ProtocolError`, so a malformed reply reaches a user as an MpistageError.
WireError = ProtocolError


class Header(NamedTuple):
    """The fixed 32-byte header of every request and reply.

    For a request ``code`` is the :class:`Op`; for a reply it is the :class:`Status`.
    """

    code: int
    seq: int
    nfields: int
    payload_nbytes: int = 0
    flags: int = 0

    def pack(self, magic: bytes) -> bytes:
        return HEADER.pack(magic, PROTOCOL_VERSION, self.code, self.seq, self.flags,
                           self.nfields, 0, self.payload_nbytes)


def pack_message(magic: bytes, code: int, seq: int, fields: list[bytes],
                 payload_nbytes: int = 0, flags: int = 0) -> bytes:
    """Header followed by length-prefixed fields, as one buffer."""
    head = HEADER.pack(magic, PROTOCOL_VERSION, code, seq, flags, len(fields), 0, payload_nbytes)
    if not fields:
        return head
    parts = [head]
    for f in fields:
        parts += (FIELD_LEN.pack(len(f)), f)
    return b"".join(parts)


def unpack_message(buf: memoryview | bytes, magic: bytes) -> tuple[Header, list[memoryview]]:
    """Parse a header and its fields; raises :class:`WireError` on any inconsistency."""
    mv = memoryview(buf).cast("B")
    if len(mv) < HEADER_SIZE:
        raise WireError(f"message of {len(mv)} bytes is shorter than the {HEADER_SIZE}-byte header")
    got_magic, version, code, seq, flags, nfields, reserved, payload = HEADER.unpack_from(mv)
    if got_magic != magic:
        raise WireError(f"bad magic {bytes(got_magic)!r}, expected {magic!r}")
    if nfields == 0 and len(mv) == HEADER_SIZE and version == PROTOCOL_VERSION and not reserved:
        return Header(code, seq, 0, payload, flags), []
    if version != PROTOCOL_VERSION:
        raise WireError(f"protocol version {version} not supported (this is {PROTOCOL_VERSION})")
    if reserved:
        raise WireError(f"reserved header bytes 20..23 must be 0, not {reserved}")
    if nfields > MAX_FIELDS:
        raise WireError(f"{nfields} fields is more than the limit {MAX_FIELDS}")
    fields: list[memoryview] = []
    pos = HEADER_SIZE
    for i in range(nfields):
        if pos + 4 > len(mv):
            raise WireError(f"field {i} length runs past the end of the message")
        (n,) = FIELD_LEN.unpack_from(mv, pos)
        pos += 4
        if pos + n > len(mv):
            raise WireError(f"field {i} of {n} bytes runs past the end of the message")
        fields.append(mv[pos:pos + n])
        pos += n
    if pos != len(mv):
        raise WireError(f"{len(mv) - pos} trailing bytes after the last field")
    return Header(code, seq, nfields, payload, flags), fields


def check_request_header(header: Header) -> None:
    """Range-check a request header's seq, flags and payload size (docs/protocol.md, "Header");
    raises :class:`WireError`. The seq is checked first: only a request that passes it can be
    answered."""
    if not SEQ_MIN <= header.seq <= SEQ_MAX:
        raise WireError(f"seq {header.seq} is outside {SEQ_MIN}..{SEQ_MAX}")
    if header.flags & ~KNOWN_FLAGS:
        raise WireError(f"unknown header flags {header.flags:#x}")
    nbytes = header.payload_nbytes
    if nbytes > MAX_PAYLOAD_BYTES:
        raise WireError(f"a payload of {nbytes} bytes is more than the limit {MAX_PAYLOAD_BYTES}")
    if nbytes and header.flags == KNOWN_FLAGS:
        raise WireError("a request's payload travels inline or one-sided, not both")
    if nbytes and header.flags & FLAG_INLINE and nbytes > INLINE_MAX_BYTES:
        raise WireError(f"an inline payload of {nbytes} bytes is more than {INLINE_MAX_BYTES}")


# ---------------------------------------------------------------- tensor descriptors

class TensorDesc(NamedTuple):
    """dtype, shape and memory order of a tensor whose bytes travel as a payload."""

    dtype: np.dtype
    shape: tuple[int, ...]
    order: int = ORDER_C

    @property
    def nbytes(self) -> int:
        n = self.dtype.itemsize
        for d in self.shape:
            n *= d
        return n

    def pack(self) -> bytes:
        code = _NATIVE_CODES.get(self.dtype) or DTYPE_CODES[np.dtype(self.dtype).newbyteorder("=")]
        return _pack_desc(code, self.order, self.shape)

    @classmethod
    def unpack(cls, field: memoryview | bytes) -> TensorDesc:
        """Parse a descriptor field; raises :class:`WireError` when it is malformed. Recent
        descriptors are cached (a simulation sends the same few shapes over and over)."""
        raw = bytes(field)
        desc = _DESC_CACHE.get(raw)
        if desc is None:
            desc = cls._parse(raw)
            if len(_DESC_CACHE) >= 4096:
                _DESC_CACHE.clear()
            _DESC_CACHE[raw] = desc
        return desc

    @classmethod
    def _parse(cls, field: bytes) -> TensorDesc:
        mv = memoryview(field)
        if len(mv) < DESC_HEAD.size:
            raise WireError("tensor descriptor shorter than 4 bytes")
        code, order, ndim = DESC_HEAD.unpack_from(mv)
        if code not in CODE_DTYPES:
            raise WireError(f"unknown dtype code {code}")
        if order not in (ORDER_C, ORDER_F):
            raise WireError(f"unknown memory order {order}")
        if ndim > MAX_DIMS:
            raise WireError(f"a tensor of {ndim} dimensions is more than the limit {MAX_DIMS}")
        if len(mv) != DESC_HEAD.size + 8 * ndim:
            raise WireError(f"tensor descriptor of {len(mv)} bytes does not hold {ndim} dims")
        shape = tuple(DIM.unpack_from(mv, DESC_HEAD.size + 8 * i)[0] for i in range(ndim))
        dtype = CODE_DTYPES[code]
        nbytes = dtype.itemsize
        for d in shape:  # Python integers: no overflow; any dimension 0 makes an empty tensor
            nbytes *= d
        if nbytes > MAX_TENSOR_BYTES or (not nbytes and max(shape, default=0) > MAX_TENSOR_BYTES):
            raise WireError(f"shape {shape} of {dtype} is more than the limit of {MAX_TENSOR_BYTES} bytes")
        return cls(dtype, shape, order)

    def view(self, raw: np.ndarray | memoryview | bytes | bytearray) -> np.ndarray:
        """The numpy array these bytes are, without a copy."""
        flat = np.frombuffer(raw, dtype=self.dtype, count=int(np.prod(self.shape, dtype=np.int64)))
        return flat.reshape(self.shape, order="F" if self.order == ORDER_F else "C")


_DESC_CACHE: dict[bytes, TensorDesc] = {}


@functools.lru_cache(maxsize=4096)
def _pack_desc(code: int, order: int, shape: tuple[int, ...]) -> bytes:
    return DESC_HEAD.pack(code, order, len(shape)) + b"".join(DIM.pack(d) for d in shape)


def describe(array: np.ndarray) -> tuple[TensorDesc, np.ndarray]:
    """The descriptor of ``array`` and a contiguous array holding its bytes (a copy only when
    ``array`` is neither C- nor Fortran-contiguous, or not little-endian)."""
    dt = np.dtype(array.dtype)
    if dt.newbyteorder("=") not in DTYPE_CODES:
        raise TypeError(f"dtype {dt} is not supported; use one of "
                        f"{', '.join(str(d) for d in DTYPE_CODES)}")
    if dt.byteorder == ">":
        array = array.astype(dt.newbyteorder("<"))
    if array.ndim > 1 and array.flags.f_contiguous and not array.flags.c_contiguous:
        return TensorDesc(array.dtype, array.shape, ORDER_F), array
    if not array.flags.c_contiguous:
        array = array.copy(order="C")
    return TensorDesc(array.dtype, array.shape, ORDER_C), array


def encode_tensor(array: np.ndarray) -> tuple[bytes, np.ndarray]:
    """The descriptor field of ``array`` and its bytes as a flat uint8 array (see :func:`describe`);
    a fast path for the common C-contiguous native-dtype case."""
    code = _NATIVE_CODES.get(array.dtype)
    if code is not None and array.flags.c_contiguous and array.size:
        return _pack_desc(code, ORDER_C, array.shape), array.reshape(-1).view(np.uint8)
    desc, arr = describe(array)
    return desc.pack(), as_bytes_view(arr)


def as_bytes_view(array: np.ndarray) -> np.ndarray:
    """A flat uint8 view of a contiguous array (C or Fortran order)."""
    if array.size == 0:
        return np.empty(0, np.uint8)
    order = "F" if (array.flags.f_contiguous and not array.flags.c_contiguous) else "C"
    return array.reshape(-1, order=order).view(np.uint8)


# ---------------------------------------------------------------- small field helpers

U8 = struct.Struct("<B")
U32 = struct.Struct("<I")
U64 = struct.Struct("<Q")


def key_field(key: str) -> bytes:
    """A key as a field: UTF-8, 1 to MAX_KEY_BYTES bytes."""
    raw = key.encode("utf-8")
    if not raw:
        raise ValueError("a key must not be empty")
    if len(raw) > MAX_KEY_BYTES:
        raise ValueError(f"key of {len(raw)} bytes is longer than the limit {MAX_KEY_BYTES}")
    return raw


def decode_key(field: memoryview) -> str:
    if len(field) == 0:
        raise WireError("empty key")
    if len(field) > MAX_KEY_BYTES:
        raise WireError(f"key of {len(field)} bytes is longer than the limit {MAX_KEY_BYTES}")
    try:
        return bytes(field).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WireError("key is not valid UTF-8") from exc


def decode_u32(field: memoryview, what: str) -> int:
    if len(field) != 4:
        raise WireError(f"{what} must be a 4-byte unsigned integer")
    return U32.unpack(field)[0]


def decode_i64(field: memoryview, what: str) -> int:
    if len(field) != 8:
        raise WireError(f"{what} must be an 8-byte signed integer")
    return struct.unpack("<q", field)[0]


# ---------------------------------------------------------------- dataset metadata

META_SCALAR = 1
META_STRING = 2
#: Dtype codes of metadata scalars: the tensor codes plus SmartRedis's unsigned metadata types
#: (``add_meta_scalar`` takes uint32 and uint64; tensors do not).
META_DTYPE_CODES: dict[np.dtype, int] = {**DTYPE_CODES, np.dtype("uint32"): 9, np.dtype("uint64"): 10}
CODE_META_DTYPES: dict[int, np.dtype] = {code: dt.newbyteorder("<") for dt, code in META_DTYPE_CODES.items()}


def pack_metadata(scalars: dict[str, np.ndarray], strings: dict[str, list[str]]) -> bytes:
    """Encode a dataset's metadata fields (see docs/protocol.md, "Dataset metadata")."""
    out = [U32.pack(len(scalars) + len(strings))]
    for name, values in scalars.items():
        raw = name.encode()
        arr = np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<"))
        out += [U32.pack(len(raw)), raw, U8.pack(META_SCALAR),
                U8.pack(META_DTYPE_CODES[arr.dtype.newbyteorder("=")]), U32.pack(arr.size), arr.tobytes()]
    for name, texts in strings.items():
        raw = name.encode()
        out += [U32.pack(len(raw)), raw, U8.pack(META_STRING), U32.pack(len(texts))]
        for t in texts:
            b = t.encode()
            out += [U32.pack(len(b)), b]
    return b"".join(out)


def unpack_metadata(field: memoryview | bytes) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    """Decode :func:`pack_metadata`'s layout; raises :class:`WireError` when it is malformed."""
    mv = memoryview(field).cast("B")
    pos = 0

    def take(n: int) -> memoryview:
        nonlocal pos
        if pos + n > len(mv):
            raise WireError("dataset metadata runs past its field")
        chunk = mv[pos:pos + n]
        pos += n
        return chunk

    def take_u32() -> int:
        return U32.unpack(take(4))[0]

    def take_str() -> str:
        try:
            return bytes(take(take_u32())).decode()
        except UnicodeDecodeError as exc:
            raise WireError("dataset metadata holds a string that is not UTF-8") from exc

    scalars: dict[str, np.ndarray] = {}
    strings: dict[str, list[str]] = {}
    for _ in range(take_u32()):
        name = take_str()
        kind = take(1)[0]
        if kind == META_SCALAR:
            code = take(1)[0]
            if code not in CODE_META_DTYPES:
                raise WireError(f"unknown dtype code {code} in dataset metadata")
            dt = CODE_META_DTYPES[code]
            n = take_u32()
            scalars[name] = np.frombuffer(bytes(take(n * dt.itemsize)), dtype=dt).astype(dt.newbyteorder("="))
        elif kind == META_STRING:
            strings[name] = [take_str() for _ in range(take_u32())]
        else:
            raise WireError(f"unknown metadata kind {kind}")
    if pos != len(mv):
        raise WireError("trailing bytes after dataset metadata")
    return scalars, strings
