"""The model and script half of ``Client`` (SmartRedis's names): store models (TorchScript,
``torch.export`` programs, ONNX) and TorchScript scripts where runs happen, run them on tensors in
the store, synchronously or not, each run with a deadline.

Mixed into :class:`mpistage.Client`; checks arguments and hands them to the backend's engine
half (``mpistage.backends.base.EngineBackend``). The MPI wire layouts are in ``docs/engine.md``.
"""

from __future__ import annotations

import io
import os
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .backends.base import Backend, EngineBackend, ModelSpec, RunHandle
from .errors import BadArgumentError
from .protocol import Kind

DEVICES = ("CPU", "GPU")
#: ONNX and ORT are one runtime (onnxruntime); TORCH takes TorchScript and torch.export programs.
MODEL_BACKENDS = ("TORCH", "ONNX", "ORT")
#: RedisAI's other backends: what to do instead.
CONVERT_TO_ONNX = {
    "TF": "convert the TensorFlow model to ONNX (pip install tf2onnx; python -m tf2onnx.convert "
          "--saved-model DIR --output model.onnx) and set it with backend='ONNX'",
    "TFLITE": "convert the TFLite model to ONNX (python -m tf2onnx.convert --tflite model.tflite "
              "--output model.onnx) and set it with backend='ONNX'",
}
MAX_TIMEOUT_S = (2**32 - 1) / 1000  # the wire carries milliseconds in a u32


class EngineClientMixin:
    """Models and scripts; needs the ``Client`` attributes ``_backend`` and ``_key``."""

    _backend: Backend
    _key: Callable[..., str]

    @property
    def _engine(self) -> EngineBackend:
        engine = self._backend.engine
        if engine is None:
            raise BadArgumentError(f"the {self._backend.name!r} backend runs no models or scripts")
        return engine

    # ------------------------------------------------------------ models
    def set_model(self, name: str, model: Any, backend: str = "TORCH", device: str = "CPU",
                  batch_size: int = 0, min_batch_size: int = 0, min_batch_timeout: int = 0,
                  tag: str = "", inputs: Sequence[str] | None = None,
                  outputs: Sequence[str] | None = None, example_inputs: Any = None) -> None:
        """Store a model on every shard under ``name``, all or nothing.

        ``backend`` "TORCH": ``model`` is the bytes of a TorchScript file (``torch.jit.save``) or of
        a ``torch.export`` program (``torch.export.save``, told apart by content), a
        ``ScriptModule`` (sent as TorchScript), or a ``torch.nn.Module``: with ``example_inputs``
        (a tensor or a tuple of them) it is exported here with ``torch.export.export`` and sent as
        a ``.pt2`` program, dim 0 of every input marked dynamic (``Dim.AUTO``: give at least 2
        rows, or torch specializes it and the server runs one request per call); without, it is
        scripted (``torch.jit.script``, deprecated by PyTorch) and sent as TorchScript.
        ``backend`` "ONNX" (or "ORT"): the bytes of an ONNX model (``torch.onnx.export``, skl2onnx,
        Keras 3 ``model.export(format="onnx")``), self-contained (no external data).
        "TF"/"TFLITE" raise BadArgumentError saying how to convert to ONNX.
        ``device`` "CPU" or "GPU" (see docs/engine.md for GPU on a machine without one).
        ``batch_size``, ``min_batch_size``, ``min_batch_timeout`` (ms): dynamic batching, with
        RedisAI's meaning. ``inputs``/``outputs`` are TensorFlow-only in SmartRedis and ignored.
        Replacing a model is atomic on each shard; when it fails on some shards only, the name
        is removed from every shard (the old version too) and the first error is raised.
        Raises BadArgumentError for an unknown backend or one the server does not accept, a bad
        device or batching settings, or bytes the backend does not load.
        """
        if not isinstance(model, (bytes, bytearray, memoryview)) and backend != "TORCH":
            raise TypeError(f"backend {backend!r} takes the model's bytes")
        self._send_model(name, _model_bytes(model, example_inputs), backend, device, batch_size,
                         min_batch_size, min_batch_timeout, tag)

    def set_model_from_file(self, name: str, model_file: str | os.PathLike[str], backend: str = "TORCH",
                            device: str = "CPU", batch_size: int = 0, min_batch_size: int = 0,
                            min_batch_timeout: int = 0, tag: str = "",
                            inputs: Sequence[str] | None = None,
                            outputs: Sequence[str] | None = None) -> None:
        """:meth:`set_model` with the bytes of a model file (TorchScript, ``.pt2`` or ``.onnx``)."""
        self._send_model(name, Path(model_file).read_bytes(), backend, device, batch_size,
                         min_batch_size, min_batch_timeout, tag)

    def _send_model(self, name: str, data: bytes, backend: str, device: str, batch_size: int,
                    min_batch_size: int, min_batch_timeout: int, tag: str) -> None:
        if backend in CONVERT_TO_ONNX:
            raise BadArgumentError(f"backend {backend!r} is not supported: {CONVERT_TO_ONNX[backend]}")
        if backend not in MODEL_BACKENDS:
            raise BadArgumentError(f"backend {backend!r} is not supported (only {', '.join(MODEL_BACKENDS)})")
        for value, what in ((batch_size, "batch_size"), (min_batch_size, "min_batch_size"),
                            (min_batch_timeout, "min_batch_timeout")):
            if int(value) < 0:
                raise BadArgumentError(f"{what} must not be negative")
        if not isinstance(tag, str):
            raise TypeError("a model's tag is a str")
        spec = ModelSpec(backend, _device(device), tag, int(batch_size), int(min_batch_size),
                         int(min_batch_timeout))
        self._engine.set_model(self._key(name, Kind.MODEL, False), data, spec)

    def get_model(self, name: str) -> bytes:
        """The model file bytes stored under ``name`` (as sent); raises KeyNotFoundError."""
        return self._engine.get_model(self._key(name, Kind.MODEL))

    def delete_model(self, name: str) -> None:
        """Remove the model from every shard; raises KeyNotFoundError when there is none."""
        self._engine.delete_code(Kind.MODEL, self._key(name, Kind.MODEL, False))

    def model_exists(self, name: str) -> bool:
        """True when a model ``name`` is stored."""
        return self._engine.model_exists(self._key(name, Kind.MODEL))

    def poll_model(self, name: str, poll_frequency_ms: int, num_tries: int) -> bool:
        """Check up to ``num_tries`` times, ``poll_frequency_ms`` apart, for model ``name``."""
        for attempt in range(num_tries):
            if self.model_exists(name):
                return True
            if attempt + 1 < num_tries:
                time.sleep(poll_frequency_ms / 1000)
        return False

    def run_model(self, name: str, inputs: str | Sequence[str], outputs: str | Sequence[str],
                  timeout: float | None = None) -> None:
        """Run model ``name`` on the tensors under the ``inputs`` keys (bound to the model's
        inputs in its declared order), store its outputs under the ``outputs`` keys (in the
        model's declared order). Runs on the shard holding the first input; requests that arrive
        together may share one batched forward pass. ``timeout``: seconds the run may take on the
        server, queueing included (default: ``SR_MODEL_TIMEOUT`` in milliseconds, as in
        SmartRedis, else the server's ``--model-timeout``, 60 s by default); past it this call
        fails, the server goes on. Raises KeyNotFoundError (no such model or input),
        BadArgumentError (wrong number of inputs or outputs), ServerRuntimeError (the model
        raised: wrong shape or dtype, out of memory...; or "timed out after")."""
        self.run_model_async(name, inputs, outputs, timeout).wait()

    def run_model_async(self, name: str, inputs: str | Sequence[str],
                        outputs: str | Sequence[str], timeout: float | None = None) -> RunHandle:
        """Start :meth:`run_model` and return at once; ``handle.wait()`` gives its result."""
        ins, outs = self._run_keys(inputs, outputs)
        return self._engine.run_model(self._key(name, Kind.MODEL), ins, outs, _timeout_ms(timeout))

    # ------------------------------------------------------------ scripts
    def set_script(self, name: str, script: str, device: str = "CPU") -> None:
        """Store TorchScript source (one or more ``def``s) on every shard under ``name``, all or
        nothing (as :meth:`set_model`). Raises BadArgumentError when it does not compile."""
        if not isinstance(script, str):
            raise TypeError("set_script takes TorchScript source as a str")
        # PyTorch deprecates TorchScript; a server may run no scripts (--no-scripts): preprocessing
        # can be an ONNX model or a torch.export program instead (docs/engine.md).
        self._engine.set_script(self._key(name, Kind.SCRIPT, False), script, _device(device))

    def set_script_from_file(self, name: str, file: str | os.PathLike[str], device: str = "CPU") -> None:
        """:meth:`set_script` with the source read from ``file``."""
        self.set_script(name, Path(file).read_text(), device)

    def set_function(self, name: str, function: Callable[..., Any], device: str = "CPU") -> None:
        """Store a Python function as a script (it is compiled with ``torch.jit.script`` here and
        its TorchScript code is sent): run it with ``run_script(name, function.__name__, ...)``.
        The function must be self-contained (it may call torch, not other Python functions)."""
        import torch

        self.set_script(name, _jit(torch.jit.script, function).code, device)

    def get_script(self, name: str) -> str:
        """The TorchScript source stored under ``name``; raises KeyNotFoundError."""
        return self._engine.get_script(self._key(name, Kind.SCRIPT))

    def delete_script(self, name: str) -> None:
        """Remove the script from every shard; raises KeyNotFoundError when there is none."""
        self._engine.delete_code(Kind.SCRIPT, self._key(name, Kind.SCRIPT, False))

    def run_script(self, name: str, fn_name: str, inputs: str | Sequence[str],
                   outputs: str | Sequence[str], timeout: float | None = None) -> None:
        """Call function ``fn_name`` of script ``name`` with the input tensors as positional
        arguments; store what it returns (a tensor or a tuple of tensors) under ``outputs``.
        ``timeout`` and errors as for :meth:`run_model`."""
        self.run_script_async(name, fn_name, inputs, outputs, timeout).wait()

    def run_script_async(self, name: str, fn_name: str, inputs: str | Sequence[str],
                         outputs: str | Sequence[str], timeout: float | None = None) -> RunHandle:
        """Start :meth:`run_script` and return at once; ``handle.wait()`` gives its result."""
        if not isinstance(fn_name, str) or not fn_name:
            raise TypeError("run_script takes the function's name as a non-empty str")
        ins, outs = self._run_keys(inputs, outputs)
        return self._engine.run_script(self._key(name, Kind.SCRIPT), fn_name, ins, outs, _timeout_ms(timeout))

    # ------------------------------------------------------------ helpers
    def _run_keys(self, inputs: str | Sequence[str], outputs: str | Sequence[str]) -> tuple[list[str], list[str]]:
        ins = [inputs] if isinstance(inputs, str) else list(inputs)
        outs = [outputs] if isinstance(outputs, str) else list(outputs)
        if not ins:
            raise BadArgumentError("a run needs at least one input key")
        return ([self._key(k, Kind.TENSOR) for k in ins],
                [self._key(k, Kind.TENSOR, False) for k in outs])


def _device(device: str) -> str:
    if device not in DEVICES:
        raise BadArgumentError(f"device {device!r} is not CPU or GPU")
    return device


def _timeout_ms(timeout: float | None) -> int:
    """A run's deadline for the wire, in ms (0: the server's default): ``timeout`` seconds, else
    ``SR_MODEL_TIMEOUT`` (ms, as in SmartRedis)."""
    if timeout is None:
        text = os.environ.get("SR_MODEL_TIMEOUT", "").strip()
        if not text:
            return 0
        try:
            timeout = float(text) / 1000
        except ValueError:
            raise BadArgumentError(f"SR_MODEL_TIMEOUT must be a number of milliseconds, not {text!r}") from None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError("a run's timeout is a number of seconds")
    if not 0 < timeout <= MAX_TIMEOUT_S:
        raise BadArgumentError(f"a run's timeout must be more than 0 and at most {MAX_TIMEOUT_S:.0f} s, not {timeout}")
    return max(1, round(timeout * 1000))


_told_deprecation = False  # whether _jit has warned in this process


def _jit(fn: Callable[..., Any], *args: Any) -> Any:
    """Call a ``torch.jit`` function; its deprecation warning (torch 2.13 warns on every call)
    becomes one FutureWarning of mpistage's per process that says what to use instead."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn(*args)
    global _told_deprecation
    for w in caught:
        if issubclass(w.category, DeprecationWarning) and "torch.jit" in str(w.message):
            if _told_deprecation:
                continue
            _told_deprecation = True
            warnings.warn("TorchScript is deprecated by PyTorch: pass example_inputs to set_model to send "
                          "a torch.export program, or use backend='ONNX' (docs/engine.md, torch version policy)",
                          FutureWarning, stacklevel=4)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return result


def _export_bytes(model: Any, example_inputs: Any) -> bytes:
    """A ``torch.export`` program of ``model`` (``.pt2`` bytes), dim 0 of every tensor input dynamic."""
    import torch

    example = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    dims = tuple({0: torch.export.Dim.AUTO} if isinstance(t, torch.Tensor) and t.dim() > 0 else None
                 for t in example)
    try:
        program = torch.export.export(model, example, dynamic_shapes=dims)
    except Exception as exc:
        raise BadArgumentError(f"torch.export.export failed on this module: {exc}") from None
    buf = io.BytesIO()
    torch.export.save(program, buf)
    return buf.getvalue()


def _model_bytes(model: Any, example_inputs: Any) -> bytes:
    """The bytes sent for ``model``: bytes as given; a ScriptModule as TorchScript; an nn.Module
    as a torch.export program with ``example_inputs``, else scripted to TorchScript."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model)
    if isinstance(model, (str, os.PathLike)):
        raise TypeError("set_model takes the model's bytes or a torch module; use "
                        "set_model_from_file for a file")
    import torch

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"set_model takes bytes or a torch.nn.Module, not {type(model).__name__}")
    if not isinstance(model, torch.jit.ScriptModule):
        model = model.eval()
        if example_inputs is not None:
            return _export_bytes(model, example_inputs)
        model = _jit(torch.jit.script, model)
    buf = io.BytesIO()
    _jit(torch.jit.save, model, buf)
    return buf.getvalue()
