"""Decoding the engine's requests (operations 50-57, docs/engine.md "Wire layout") into plain
values; no store, no framework here."""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import BadArgumentError, ProtocolError
from ...protocol import U64, decode_key, decode_u32
from ..handlers import Request, expect_fields
from .batcher import BatchPolicy
from .runtime import Runtimes, check_device


@dataclass(frozen=True)
class SetModel:
    """A decoded SET_MODEL."""

    name: str
    backend: str
    device: str
    tag: str
    policy: BatchPolicy
    data: bytes


@dataclass(frozen=True)
class SetScript:
    """A decoded SET_SCRIPT."""

    name: str
    device: str
    source: str


@dataclass(frozen=True)
class RunCall:
    """A decoded RUN_MODEL / RUN_SCRIPT (``function`` is None for a model)."""

    name: str
    function: str | None
    inputs: list[str]
    outputs: list[str]
    timeout_ms: int = 0  # 0: the server's default deadline

    @property
    def what(self) -> str:
        """How errors name what ran."""
        if self.function is None:
            return f"model {self.name!r}"
        return f"function {self.function!r} of script {self.name!r}"


def text(f: memoryview, what: str) -> str:
    try:
        return bytes(f).decode()
    except UnicodeDecodeError:
        raise BadArgumentError(f"{what} is not UTF-8 text") from None


def u64(f: memoryview, what: str) -> int:
    if len(f) != 8:
        raise ProtocolError(f"{what} must be an 8-byte unsigned integer")
    return U64.unpack(f)[0]


def decode_set_model(req: Request) -> SetModel:
    """[name, backend, device, tag, u64 batch_size, u64 min_batch_size, u64 min_batch_timeout]
    + one payload part. Raises ProtocolError / BadArgumentError."""
    name_f, backend_f, device_f, tag_f, bs_f, mbs_f, mbt_f = expect_fields(req, 7)
    name = decode_key(name_f)
    backend, device, tag = text(backend_f, "backend"), text(device_f, "device"), text(tag_f, "tag")
    batch_size, min_batch, timeout = (u64(f, what) for f, what in (
        (bs_f, "batch_size"), (mbs_f, "min_batch_size"), (mbt_f, "min_batch_timeout")))
    Runtimes.check_backend(backend)
    check_device(device)
    if min_batch and not batch_size:
        raise BadArgumentError("min_batch_size needs a batch_size")
    if timeout and not min_batch:
        raise BadArgumentError("min_batch_timeout needs a min_batch_size")
    if len(req.payload) != 1:
        raise BadArgumentError("SET_MODEL takes one payload part: the model file's bytes")
    return SetModel(name, backend, device, tag, BatchPolicy(batch_size, min_batch, timeout),
                    req.payload[0].tobytes())


def decode_set_script(req: Request) -> SetScript:
    """[name, device] + at most one payload part (the source)."""
    name_f, device_f = expect_fields(req, 2)
    name, device = decode_key(name_f), text(device_f, "device")
    check_device(device)
    if len(req.payload) > 1:
        raise BadArgumentError("SET_SCRIPT takes one payload part: the TorchScript source")
    try:
        source = req.payload[0].tobytes().decode() if req.payload else ""
    except UnicodeDecodeError:
        raise BadArgumentError(f"script {name!r} is not UTF-8 text") from None
    return SetScript(name, device, source)


def decode_name(req: Request) -> str:
    """GET_MODEL / GET_SCRIPT: [name]."""
    (name_f,) = expect_fields(req, 1)
    return decode_key(name_f)


def decode_run(fields: list[memoryview], with_function: bool) -> RunCall:
    """[name, (function,) count, inputs..., outputs...]; ``count`` is a u32 n_inputs, or 8 bytes:
    u32 n_inputs then u32 timeout_ms (the call's deadline; 0 = the server's default)."""
    head = 3 if with_function else 2
    if len(fields) < head:
        raise ProtocolError(f"{'RUN_SCRIPT' if with_function else 'RUN_MODEL'} takes a name, "
                            f"{'a function name, ' if with_function else ''}an input count and keys")
    name = decode_key(fields[0])
    function = text(fields[1], "function name") if with_function else None
    count = fields[head - 1]
    timeout_ms = 0
    if len(count) == 8:
        count, timeout_ms = count[:4], decode_u32(count[4:], "the timeout")
    n_in = decode_u32(count, "the input count")
    keys = [decode_key(f) for f in fields[head:]]
    if n_in > len(keys):
        raise ProtocolError(f"input count {n_in} is more than the {len(keys)} keys given")
    if n_in == 0:
        raise BadArgumentError("a run needs at least one input key")
    return RunCall(name, function, keys[:n_in], keys[n_in:], timeout_ms)
