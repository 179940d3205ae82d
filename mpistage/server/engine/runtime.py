"""The model-runtime interface: what the engine needs from a framework that runs models.

The engine (:mod:`.engine`) never imports a framework. It asks :class:`Runtimes` for the runtime
of a model's backend name (``SET_MODEL``'s backend field, e.g. ``"TORCH"``); the runtime's module is
imported the first time that name is used, so a server that never gets a model never imports
torch. Inputs reach a runtime as numpy arrays and its outputs leave as numpy arrays.

Adding a runtime (e.g. ONNX): write a module with a class that follows :class:`ModelRuntime`
(``load_model`` returning a :class:`Runnable`; ``compile_script`` may raise
:class:`~mpistage.errors.BadArgumentError` when the framework has no scripts), and add its
``"module:Class"`` to :data:`RUNTIMES` under the backend name clients pass.
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np

from ...errors import BadArgumentError

#: Backend name -> "module:Class" of its runtime, imported on first use.
RUNTIMES: dict[str, str] = {"TORCH": "mpistage.server.engine.torch_runtime:TorchRuntime"}
#: Scripts (SET_SCRIPT) are TorchScript source: they always go to this runtime.
SCRIPT_BACKEND = "TORCH"
#: What a client may ask a model or script to run on.
DEVICES = ("CPU", "GPU")


@dataclass(frozen=True)
class RuntimeOptions:
    """Server options every runtime applies when it is created (``--threads``: 0 = the
    framework's default number of intra-op threads)."""

    threads: int = 0


DEFAULT_OPTIONS = RuntimeOptions()


class Runnable(Protocol):
    """A loaded model, or one function of a compiled script."""

    device: str  # where it runs, as the framework names it ("cpu", "cuda:0")
    arity: tuple[int, int]  # (required, total) inputs

    def __call__(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Run on ``inputs`` (C-contiguous arrays the runnable owns and may change); return the
        outputs as numpy arrays in host memory. Raises
        :class:`~mpistage.errors.ServerRuntimeError` with the framework's message (or "ran out of
        memory") when the run fails."""
        ...


class ScriptUnit(Protocol):
    """A compiled script: a set of named functions."""

    device: str

    def function(self, name: str) -> Runnable | None:
        """The function called ``name``, or None when the script has none."""
        ...


class ModelRuntime(Protocol):
    """One framework. Loading runs on the engine's loader thread, runs on its worker thread."""

    backend: ClassVar[str]

    def load_model(self, name: str, data: bytes, device: str, local_rank: int) -> tuple[Runnable, str | None]:
        """The model in ``data`` on ``device`` ("CPU"/"GPU"; ``local_rank`` picks among a node's
        GPUs) and a warning when the device could not be had. Raises BadArgumentError when
        ``data`` is not a model this runtime loads."""
        ...

    def compile_script(self, name: str, source: str, device: str,
                       local_rank: int) -> tuple[ScriptUnit, str | None]:
        """The compiled ``source``, as :meth:`load_model`. Raises BadArgumentError."""
        ...

    def report(self) -> dict[str, Any]:
        """What INFO shows about this runtime (threads, devices)."""
        ...


class Runtimes:
    """The runtimes of one shard, each created (and its framework imported) on first use;
    thread-safe."""

    def __init__(self, options: RuntimeOptions = DEFAULT_OPTIONS) -> None:
        self.options = options
        self._loaded: dict[str, ModelRuntime] = {}
        self._lock = threading.Lock()

    @staticmethod
    def check_backend(backend: str) -> None:
        """Raise BadArgumentError unless a runtime is registered for ``backend``."""
        if backend not in RUNTIMES:
            raise BadArgumentError(f"backend {backend!r} is not supported (supported: {', '.join(RUNTIMES)})")

    def get(self, backend: str) -> ModelRuntime:
        """The runtime for ``backend`` (imported now if it is the first use)."""
        self.check_backend(backend)
        with self._lock:
            runtime = self._loaded.get(backend)
            if runtime is None:
                module, _, cls = RUNTIMES[backend].partition(":")
                runtime = getattr(importlib.import_module(module), cls)(self.options)
                self._loaded[backend] = runtime
            return runtime

    def report(self) -> dict[str, Any]:
        """Per loaded runtime, its report; runtimes never used are absent."""
        with self._lock:
            loaded = dict(self._loaded)
        return {name: rt.report() for name, rt in loaded.items()}


def check_device(device: str) -> None:
    """Raise BadArgumentError unless ``device`` is CPU or GPU."""
    if device not in DEVICES:
        raise BadArgumentError(f"device {device!r} is not CPU or GPU")
