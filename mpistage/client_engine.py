"""The model and script half of ``Client`` (SmartRedis's names): store TorchScript models and
scripts where runs happen, run them on tensors in the store, synchronously or not.

Mixed into :class:`mpistage.Client`; checks arguments and hands them to the backend's engine
half (``mpistage.backends.base.EngineBackend``). The MPI wire layouts are in ``docs/engine.md``.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .backends.base import Backend, EngineBackend, ModelSpec, RunHandle
from .errors import BadArgumentError
from .protocol import Kind

DEVICES = ("CPU", "GPU")
MODEL_BACKENDS = ("TORCH",)


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

        ``model``: the bytes of a TorchScript file (``torch.jit.save``), a ``ScriptModule``, or a
        ``torch.nn.Module``, which is scripted here (or traced with ``example_inputs`` when given).
        ``device`` "CPU" or "GPU" (see docs/engine.md for GPU on a machine without one).
        ``batch_size``, ``min_batch_size``, ``min_batch_timeout`` (ms): dynamic batching, with
        RedisAI's meaning. ``inputs``/``outputs`` are TensorFlow-only in SmartRedis and ignored.
        Replacing a model is atomic on each shard; when it fails on some shards only, the name
        is removed from every shard (the old version too) and the first error is raised.
        Raises BadArgumentError for a backend other than TORCH, a bad device or batching
        settings, or bytes that are not a TorchScript archive.
        """
        self._send_model(name, _model_bytes(model, example_inputs), backend, device, batch_size,
                         min_batch_size, min_batch_timeout, tag)

    def set_model_from_file(self, name: str, model_file: str | os.PathLike[str], backend: str = "TORCH",
                            device: str = "CPU", batch_size: int = 0, min_batch_size: int = 0,
                            min_batch_timeout: int = 0, tag: str = "",
                            inputs: Sequence[str] | None = None,
                            outputs: Sequence[str] | None = None) -> None:
        """:meth:`set_model` with the bytes of a TorchScript file (``torch.jit.save``)."""
        self._send_model(name, Path(model_file).read_bytes(), backend, device, batch_size,
                         min_batch_size, min_batch_timeout, tag)

    def _send_model(self, name: str, data: bytes, backend: str, device: str, batch_size: int,
                    min_batch_size: int, min_batch_timeout: int, tag: str) -> None:
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
        """The TorchScript file bytes stored under ``name``; raises KeyNotFoundError."""
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

    def run_model(self, name: str, inputs: str | Sequence[str], outputs: str | Sequence[str]) -> None:
        """Run model ``name`` on the tensors under the ``inputs`` keys, store its outputs under
        the ``outputs`` keys. Runs on the shard holding the first input; requests that arrive
        together may share one batched forward pass. Raises KeyNotFoundError (no such model or
        input), BadArgumentError (wrong number of inputs or outputs), ServerRuntimeError (the
        model raised: wrong shape or dtype, out of memory...)."""
        self.run_model_async(name, inputs, outputs).wait()

    def run_model_async(self, name: str, inputs: str | Sequence[str],
                        outputs: str | Sequence[str]) -> RunHandle:
        """Start :meth:`run_model` and return at once; ``handle.wait()`` gives its result."""
        ins, outs = self._run_keys(inputs, outputs)
        return self._engine.run_model(self._key(name, Kind.MODEL), ins, outs)

    # ------------------------------------------------------------ scripts
    def set_script(self, name: str, script: str, device: str = "CPU") -> None:
        """Store TorchScript source (one or more ``def``s) on every shard under ``name``, all or
        nothing (as :meth:`set_model`). Raises BadArgumentError when it does not compile."""
        if not isinstance(script, str):
            raise TypeError("set_script takes TorchScript source as a str")
        self._engine.set_script(self._key(name, Kind.SCRIPT, False), script, _device(device))

    def set_script_from_file(self, name: str, file: str | os.PathLike[str], device: str = "CPU") -> None:
        """:meth:`set_script` with the source read from ``file``."""
        self.set_script(name, Path(file).read_text(), device)

    def set_function(self, name: str, function: Callable[..., Any], device: str = "CPU") -> None:
        """Store a Python function as a script (it is compiled with ``torch.jit.script`` here and
        its TorchScript code is sent): run it with ``run_script(name, function.__name__, ...)``.
        The function must be self-contained (it may call torch, not other Python functions)."""
        import torch

        self.set_script(name, torch.jit.script(function).code, device)

    def get_script(self, name: str) -> str:
        """The TorchScript source stored under ``name``; raises KeyNotFoundError."""
        return self._engine.get_script(self._key(name, Kind.SCRIPT))

    def delete_script(self, name: str) -> None:
        """Remove the script from every shard; raises KeyNotFoundError when there is none."""
        self._engine.delete_code(Kind.SCRIPT, self._key(name, Kind.SCRIPT, False))

    def run_script(self, name: str, fn_name: str, inputs: str | Sequence[str],
                   outputs: str | Sequence[str]) -> None:
        """Call function ``fn_name`` of script ``name`` with the input tensors as positional
        arguments; store what it returns (a tensor or a tuple of tensors) under ``outputs``.
        Errors as for :meth:`run_model`."""
        self.run_script_async(name, fn_name, inputs, outputs).wait()

    def run_script_async(self, name: str, fn_name: str, inputs: str | Sequence[str],
                         outputs: str | Sequence[str]) -> RunHandle:
        """Start :meth:`run_script` and return at once; ``handle.wait()`` gives its result."""
        if not isinstance(fn_name, str) or not fn_name:
            raise TypeError("run_script takes the function's name as a non-empty str")
        ins, outs = self._run_keys(inputs, outputs)
        return self._engine.run_script(self._key(name, Kind.SCRIPT), fn_name, ins, outs)

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


def _model_bytes(model: Any, example_inputs: Any) -> bytes:
    """TorchScript file bytes of ``model`` (bytes, a ScriptModule, or an nn.Module)."""
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
        if example_inputs is None:
            model = torch.jit.script(model)
        else:
            example = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
            model = torch.jit.trace(model, example)
    buf = io.BytesIO()
    torch.jit.save(model, buf)
    return buf.getvalue()
