"""The TORCH runtime: the one module of the server that imports torch (on the first
``SET_MODEL`` or ``SET_SCRIPT`` with backend TORCH, see :mod:`.runtime`).

A model's bytes are told apart by their content (:func:`archive_kind`; all three are zip files):

* a TorchScript archive (``torch.jit.save``) is loaded with ``torch.jit.load(io.BytesIO(bytes))``;
  every request may join a batch;
* a ``torch.export`` program (``torch.export.save``, ``.pt2``) with ``torch.export.load``, moved
  to the rank's device; requests join a batch only when the program's batch dimension (dim 0 of
  every input) is dynamic;
* an AOTInductor package is refused unless the server was started with ``--allow-aoti`` (it
  ``dlopen``s a shared library the client compiled).

Scripts are TorchScript source compiled with ``torch.jit.CompilationUnit``. Every PyTorch format
runs code with the server's rights while it loads or runs (docs/engine.md, "Trust model"); the
ONNX runtime is the one for clients the server does not trust. TorchScript's deprecation warnings
(torch 2.13 warns on every ``torch.jit.load``) are caught here, at the call, and said once in
INFO (``torchscript_deprecated``), not printed per model nor silenced for the process.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
import warnings
import zipfile
from typing import Any, ClassVar

import numpy as np
import torch

from ...errors import BadArgumentError, MpistageError, ServerRuntimeError
from .runtime import RuntimeOptions, gpu_index

MAX_ERROR_CHARS = 2000
#: What torch 2.13 says on every TorchScript call (``torch.jit.load``...).
JIT_DEPRECATION = r"`torch\.jit\.\w+` is deprecated"
TORCHSCRIPT, EXPORT, AOTI = "TorchScript", "torch.export", "AOTInductor"


def archive_kind(data: bytes) -> str | None:
    """Which PyTorch format ``data`` is (:data:`TORCHSCRIPT`, :data:`EXPORT`, :data:`AOTI`), by
    the names inside the zip file (read with :mod:`zipfile`, nothing unpickled); None when it is
    none of them."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            names = z.namelist()
            fmt = next((n for n in names if n.endswith("archive_format")), None)
            pt2 = fmt is not None and z.read(fmt)[:16].strip() == b"pt2"
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return None
    if pt2 and any("/data/aotinductor/" in n for n in names):
        return AOTI
    if pt2:
        return EXPORT
    if any(n.endswith("/data.pkl") for n in names) and any("/code/" in n for n in names):
        return TORCHSCRIPT
    return None


def choose_device(requested: str, local_rank: int) -> tuple[torch.device, str | None]:
    """The torch device for ``requested`` ("CPU" or "GPU") on a server rank that is ``local_rank``
    on its node, and a warning when the request could not be met: "GPU" on a machine without
    CUDA falls back to the CPU (docs/engine.md)."""
    if requested == "CPU":
        return torch.device("cpu"), None
    index = gpu_index(local_rank)
    if index is not None:
        return torch.device("cuda", index), None
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
    """A TorchScript module's ``forward``, a script function, or a ``torch.export`` program's
    module, on one device. ``arity`` defaults to the TorchScript signature's."""

    def __init__(self, what: str, fn: Any, device: torch.device, arity_: tuple[int, int] | None = None,
                 batching: str | None = None) -> None:
        self.what = what
        self.fn = fn
        self.torch_device = device
        self.device = str(device)
        self.arity = arity_ or arity(fn.forward if isinstance(fn, torch.jit.ScriptModule) else fn)
        self.batchable = batching is None or batching.startswith("dynamic")
        self.batching = batching or "dynamic: TorchScript takes any dim 0"

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
        self.allow_aoti = options.allow_aoti
        self.torchscript_deprecated = False
        self.formats: dict[str, int] = {}

    def load_model(self, name: str, data: bytes, device: str, local_rank: int) -> tuple[TorchRunnable, str | None]:
        dev, warning = choose_device(device, local_rank)
        kind = archive_kind(data)
        if kind is None:
            raise BadArgumentError(f"model {name!r} is neither a TorchScript archive (torch.jit.save) nor a "
                                   f"torch.export program (torch.export.save)")
        if kind == AOTI and not self.allow_aoti:
            raise BadArgumentError(f"model {name!r} is an AOTInductor package, which loads a shared library "
                                   f"built by the client: refused (start the server with --allow-aoti to "
                                   f"accept them, or send the torch.export program instead)")
        load = {TORCHSCRIPT: self._load_torchscript, EXPORT: self._load_export, AOTI: self._load_aoti}[kind]
        runnable = load(name, data, dev)
        self.formats[kind] = self.formats.get(kind, 0) + 1
        return runnable, warning

    def _load_torchscript(self, name: str, data: bytes, dev: torch.device) -> TorchRunnable:
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.filterwarnings("always", message=JIT_DEPRECATION, category=DeprecationWarning)
                module = torch.jit.load(io.BytesIO(data), map_location=dev)
        except Exception as exc:
            raise BadArgumentError(f"model {name!r} is not a TorchScript archive that loads: "
                                   f"{last_line(str(exc))}") from None
        self._note_deprecation(caught)
        module.eval()
        try:
            return TorchRunnable(f"model {name!r}", module, dev)
        except Exception as exc:
            raise BadArgumentError(f"model {name!r} has no usable forward method: {exc}") from None

    def _note_deprecation(self, caught: list[warnings.WarningMessage]) -> None:
        """TorchScript's deprecation is said once, in INFO; other warnings go on as raised."""
        for w in caught:
            if issubclass(w.category, DeprecationWarning) and re.search(JIT_DEPRECATION, str(w.message)):
                self.torchscript_deprecated = True
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)

    def _load_export(self, name: str, data: bytes, dev: torch.device) -> TorchRunnable:
        try:
            program = torch.export.load(io.BytesIO(data))
        except Exception as exc:
            raise BadArgumentError(f"model {name!r} is not a torch.export program that loads: "
                                   f"{last_line(str(exc))}") from None
        if dev.type != "cpu":
            from torch.export.passes import move_to_device_pass

            program = move_to_device_pass(program, dev)
        spec = program.graph_signature
        placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
        shapes = [getattr(placeholders[i].meta.get("val"), "shape", None) for i in spec.user_inputs]
        fixed = [s for s in shapes if s is None or len(s) == 0 or not isinstance(s[0], torch.SymInt)]
        batching = ("dynamic: the program's dim 0 is dynamic" if shapes and not fixed else
                    "off: the program's dim 0 is static (export with dynamic_shapes and an example "
                    "of 2 or more rows), one request per run")
        n = len(spec.user_inputs)
        return TorchRunnable(f"model {name!r}", program.module(), dev, (n, n), batching)

    def _load_aoti(self, name: str, data: bytes, dev: torch.device) -> TorchRunnable:
        from torch._inductor import aoti_load_package

        with tempfile.TemporaryDirectory(prefix="mpistage-aoti-") as tmp:
            path = os.path.join(tmp, "model.pt2")
            with open(path, "wb") as f:
                f.write(data)
            try:
                runner = aoti_load_package(path, device_index=dev.index if dev.index is not None else -1)
            except Exception as exc:
                raise BadArgumentError(f"model {name!r} is an AOTInductor package that does not load: "
                                       f"{last_line(str(exc))}") from None
        return TorchRunnable(f"model {name!r}", runner, dev, (0, 64),
                             "off: an AOTInductor package is compiled for its shapes, one request per run")

    def compile_script(self, name: str, source: str, device: str,
                       local_rank: int) -> tuple[TorchScriptUnit, str | None]:
        dev, warning = choose_device(device, local_rank)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.filterwarnings("always", message=JIT_DEPRECATION, category=DeprecationWarning)
                unit = torch.jit.CompilationUnit(source)
        except Exception as exc:
            raise BadArgumentError(f"script {name!r} does not compile as TorchScript: "
                                   f"{last_line(str(exc))}") from None
        self._note_deprecation(caught)
        return TorchScriptUnit(name, unit, dev), warning

    def report(self) -> dict[str, Any]:
        return {"torch_version": torch.__version__, "torch_threads": torch.get_num_threads(),
                "cuda_devices": torch.cuda.device_count() if torch.cuda.is_available() else 0,
                "models_loaded_by_format": dict(self.formats), "aoti_allowed": self.allow_aoti,
                "torchscript_deprecated": self.torchscript_deprecated}
