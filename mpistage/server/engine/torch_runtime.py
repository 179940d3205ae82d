"""The TorchScript runtime: the one module of mpistage that imports torch (on the first
``SET_MODEL`` or ``SET_SCRIPT`` with backend TORCH, see :mod:`.runtime`).

Models are TorchScript archives loaded with ``torch.jit.load(io.BytesIO(bytes))``; scripts are
TorchScript source compiled with ``torch.jit.CompilationUnit``. Nothing from a client is ever
unpickled with ``torch.load``, and no client text reaches Python's ``exec``/``eval``.
"""

from __future__ import annotations

import io
import re
from typing import Any, ClassVar

import numpy as np
import torch

from ...errors import BadArgumentError, MpistageError, ServerRuntimeError
from .runtime import RuntimeOptions

MAX_ERROR_CHARS = 2000


def choose_device(requested: str, local_rank: int) -> tuple[torch.device, str | None]:
    """The torch device for ``requested`` ("CPU" or "GPU") on a server rank that is ``local_rank``
    on its node, and a warning when the request could not be met: "GPU" on a machine without
    CUDA falls back to the CPU (docs/engine.md)."""
    if requested == "CPU":
        return torch.device("cpu"), None
    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        return torch.device("cuda", local_rank % torch.cuda.device_count()), None
    return torch.device("cpu"), "device GPU was requested but this server rank sees no GPU: running on CPU"


def last_line(text: str) -> str:
    """TorchScript errors carry an interpreter traceback; the last line is the actual error."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    line = lines[-1] if lines else "(no message)"
    return line.removeprefix("builtins.")[:MAX_ERROR_CHARS]


def run_error(what: str, exc: Exception) -> MpistageError:
    """The typed error a caller gets when running ``what`` raised ``exc``."""
    if isinstance(exc, MpistageError):
        return exc
    text = str(exc)
    if (isinstance(exc, (MemoryError, torch.OutOfMemoryError))
            or "out of memory" in text.lower() or "can't allocate memory" in text):
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return ServerRuntimeError(f"{what} ran out of memory: {last_line(text)}")
    line = last_line(text)
    if not re.match(r"^[\w.]*(Error|Exception)\b", line):
        line = f"{type(exc).__name__}: {line}"
    return ServerRuntimeError(f"{what} failed: {line}")


def arity(fn: Any) -> tuple[int, int]:
    """(required, total) positional arguments of a TorchScript method or function."""
    args = [a for a in fn.schema.arguments if a.name != "self"]
    return sum(1 for a in args if not a.has_default_value()), len(args)


def to_numpy(t: Any, what: str) -> np.ndarray:
    """One output in host memory, C order."""
    if not isinstance(t, torch.Tensor):
        raise ServerRuntimeError(f"{what} returned a {type(t).__name__}, not a tensor")
    try:
        return t.detach().to("cpu").contiguous().numpy()
    except TypeError as exc:
        raise ServerRuntimeError(f"{what} returned a tensor of dtype {t.dtype}: {exc}") from None


class TorchRunnable:
    """A TorchScript module's ``forward`` or a script function, on one device."""

    def __init__(self, what: str, fn: Any, device: torch.device) -> None:
        self.what = what
        self.fn = fn
        self.torch_device = device
        self.device = str(device)
        self.arity = arity(fn.forward if isinstance(fn, torch.jit.ScriptModule) else fn)

    def __call__(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        try:
            with torch.inference_mode():
                out = self.fn(*[torch.from_numpy(a).to(self.torch_device) for a in inputs])
            outs = list(out) if isinstance(out, (tuple, list)) else [out]
            return [to_numpy(o, self.what) for o in outs]
        except Exception as exc:  # anything raised inside forward fails only this caller
            raise run_error(self.what, exc) from None


class TorchScriptUnit:
    """A compiled TorchScript source."""

    def __init__(self, name: str, unit: Any, device: torch.device) -> None:
        self.name = name
        self.unit = unit
        self.torch_device = device
        self.device = str(device)

    def function(self, name: str) -> TorchRunnable | None:
        fn = self.unit.find_function(name)
        if fn is None:
            return None
        return TorchRunnable(f"function {name!r} of script {self.name!r}", fn, self.torch_device)


class TorchRuntime:
    """TorchScript on the CPU or a CUDA device (see :class:`~.runtime.ModelRuntime`)."""

    backend: ClassVar[str] = "TORCH"

    def __init__(self, options: RuntimeOptions) -> None:
        if options.threads:
            torch.set_num_threads(options.threads)

    def load_model(self, name: str, data: bytes, device: str, local_rank: int) -> tuple[TorchRunnable, str | None]:
        dev, warning = choose_device(device, local_rank)
        try:
            module = torch.jit.load(io.BytesIO(data), map_location=dev)
        except Exception as exc:
            raise BadArgumentError(f"model {name!r} is not a TorchScript archive that loads: "
                                   f"{last_line(str(exc))}") from None
        module.eval()
        try:
            return TorchRunnable(f"model {name!r}", module, dev), warning
        except Exception as exc:
            raise BadArgumentError(f"model {name!r} has no usable forward method: {exc}") from None

    def compile_script(self, name: str, source: str, device: str,
                       local_rank: int) -> tuple[TorchScriptUnit, str | None]:
        dev, warning = choose_device(device, local_rank)
        try:
            unit = torch.jit.CompilationUnit(source)
        except Exception as exc:
            raise BadArgumentError(f"script {name!r} does not compile as TorchScript: "
                                   f"{last_line(str(exc))}") from None
        return TorchScriptUnit(name, unit, dev), warning

    def report(self) -> dict[str, Any]:
        return {"torch_version": torch.__version__, "torch_threads": torch.get_num_threads(),
                "cuda_devices": torch.cuda.device_count() if torch.cuda.is_available() else 0}
