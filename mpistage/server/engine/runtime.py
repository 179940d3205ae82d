"""The model-runtime interface: what the engine needs from a framework that runs models.

The engine (:mod:`.engine`) never imports a framework. It asks :class:`Runtimes` for the runtime
of a model's backend name (``SET_MODEL``'s backend field, e.g. ``"TORCH"``); the runtime's module is
imported the first time that name is used, so a server that never gets a model never imports
torch. Inputs reach a runtime as numpy arrays and its outputs leave as numpy arrays.

Adding a runtime: write a module with a class that follows :class:`ModelRuntime`
(``load_model`` returning a :class:`Runnable`; ``compile_script`` may raise
:class:`~mpistage.errors.BadArgumentError` when the framework has no scripts), and add its
``"module:Class"`` to :data:`RUNTIMES` under the backend names clients pass.

The server options that limit what the runtimes accept (``--backends``, ``--no-scripts``,
``--allow-aoti``) and the default deadline of a run (``--model-timeout``) are
:class:`RuntimeOptions`, added to the server's command line by :func:`add_engine_arguments`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import threading
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np

from ...errors import BadArgumentError

#: Backend name -> "module:Class" of its runtime, imported on first use.
RUNTIMES: dict[str, str] = {
    "TORCH": "mpistage.server.engine.torch_runtime:TorchRuntime",  # TorchScript and torch.export
    "ONNX": "mpistage.server.engine.onnx_runtime:OnnxRuntime",
    "ORT": "mpistage.server.engine.onnx_runtime:OnnxRuntime",  # the same runtime, RedisAI's other name
}
#: RedisAI's backends that mpistage does not run, and what to do instead.
UNSUPPORTED: dict[str, str] = {
    "TF": "convert the TensorFlow model to ONNX (pip install tf2onnx; python -m tf2onnx.convert "
          "--saved-model DIR --output model.onnx) and set it with backend='ONNX'",
    "TFLITE": "convert the TFLite model to ONNX (python -m tf2onnx.convert --tflite model.tflite "
              "--output model.onnx) and set it with backend='ONNX'",
}
#: Scripts (SET_SCRIPT) are TorchScript source: they always go to this runtime.
SCRIPT_BACKEND = "TORCH"
#: What a client may ask a model or script to run on.
DEVICES = ("CPU", "GPU")


#: Default deadline of a run in seconds when neither the call nor the server sets one
#: (SmartRedis's SR_MODEL_TIMEOUT default, 60,000 ms).
DEFAULT_MODEL_TIMEOUT_S = 60.0


def env_model_timeout(default: float = DEFAULT_MODEL_TIMEOUT_S) -> float:
    """``SR_MODEL_TIMEOUT`` (milliseconds, as in SmartRedis) in seconds, else ``default``."""
    text = os.environ.get("SR_MODEL_TIMEOUT", "").strip()
    if not text:
        return default
    try:
        ms = float(text)
    except ValueError:
        raise BadArgumentError(f"SR_MODEL_TIMEOUT must be a number of milliseconds, not {text!r}") from None
    if ms <= 0:
        raise BadArgumentError(f"SR_MODEL_TIMEOUT must be positive, not {text!r}")
    return ms / 1000


@dataclass(frozen=True)
class RuntimeOptions:
    """Server options for the engine.

    ``threads``: intra-op threads of every runtime (0 = the framework's default). ``backends``:
    the model backends this server accepts (None = all of :data:`RUNTIMES`). ``scripts``: whether
    SET_SCRIPT / RUN_SCRIPT are accepted. ``allow_aoti``: whether TORCH accepts AOTInductor
    packages (they ``dlopen`` a shared library from the client). ``model_timeout_s``: the
    deadline of a run whose request carries none."""

    threads: int = 0
    backends: frozenset[str] | None = None
    scripts: bool = True
    allow_aoti: bool = False
    model_timeout_s: float = DEFAULT_MODEL_TIMEOUT_S

    def check_backend(self, backend: str) -> None:
        """BadArgumentError unless ``backend`` is known and accepted by this server."""
        Runtimes.check_backend(backend)
        if self.backends is not None and backend not in self.backends:
            raise BadArgumentError(f"backend {backend!r} is not accepted by this server (started with "
                                   f"--backends {','.join(sorted(self.backends))})")

    def check_scripts(self) -> None:
        """BadArgumentError when this server runs no scripts."""
        if not self.scripts:
            raise BadArgumentError("scripts are disabled on this server (started with --no-scripts): "
                                   "give preprocessing as an ONNX model or a torch.export program")


DEFAULT_OPTIONS = RuntimeOptions()


def parse_backends(text: str) -> frozenset[str]:
    """``--backends ONNX,TORCH`` as a set of known backend names (argparse type)."""
    names = frozenset(n.strip().upper() for n in text.split(",") if n.strip())
    unknown = sorted(names - set(RUNTIMES))
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"unknown backend(s) {', '.join(unknown) or '(none given)'}; "
                                         f"known: {', '.join(RUNTIMES)}")
    return names


def add_engine_arguments(p: argparse.ArgumentParser) -> None:
    """The engine's server options (see :class:`RuntimeOptions` and docs/engine.md)."""
    p.add_argument("--threads", type=int, default=0,
                   help="intra-op threads of each model runtime, applied when it is first used "
                        "(0 = the framework's default)")
    p.add_argument("--backends", type=parse_backends, default=None,
                   help="comma-separated model backends this server accepts, e.g. ONNX for a server "
                        f"shared between users (default: all of {','.join(RUNTIMES)})")
    p.add_argument("--no-scripts", action="store_true", help="refuse SET_SCRIPT and RUN_SCRIPT")
    p.add_argument("--allow-aoti", action="store_true",
                   help="let TORCH load AOTInductor packages (they load a shared library sent by the client)")
    p.add_argument("--model-timeout", type=float, default=None,
                   help="seconds a run_model / run_script may take, queueing included, when the call "
                        "sets no timeout (default: SR_MODEL_TIMEOUT in ms, else 60)")


def options_from(args: argparse.Namespace) -> RuntimeOptions:
    """The :class:`RuntimeOptions` of parsed server arguments."""
    timeout = env_model_timeout() if args.model_timeout is None else args.model_timeout
    if timeout <= 0:
        raise SystemExit("mpistage-server: --model-timeout must be positive")
    return RuntimeOptions(args.threads, args.backends, not args.no_scripts, args.allow_aoti, timeout)


class Runnable(Protocol):
    """A loaded model, or one function of a compiled script."""

    device: str  # where it runs, as the framework names it ("cpu", "cuda:0")
    arity: tuple[int, int]  # (required, total) inputs
    # Optional (the engine reads them with defaults True / "dynamic"): whether requests may be
    # joined along dim 0 (the model's batch dimension is dynamic), and why or why not, for INFO.
    batchable: bool
    batching: str

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
        if backend in UNSUPPORTED:
            raise BadArgumentError(f"backend {backend!r} is not supported: {UNSUPPORTED[backend]}")
        if backend not in RUNTIMES:
            raise BadArgumentError(f"backend {backend!r} is not supported (supported: {', '.join(RUNTIMES)})")

    def get(self, backend: str) -> ModelRuntime:
        """The runtime for ``backend`` (imported now if it is the first use)."""
        self.options.check_backend(backend)
        with self._lock:
            runtime = self._loaded.get(RUNTIMES[backend])
            if runtime is None:
                module, _, cls = RUNTIMES[backend].partition(":")
                runtime = getattr(importlib.import_module(module), cls)(self.options)
                self._loaded[RUNTIMES[backend]] = runtime
            return runtime

    def report(self) -> dict[str, Any]:
        """Per loaded runtime (by its backend name), its report; runtimes never used are absent."""
        with self._lock:
            loaded = list(self._loaded.values())
        return {rt.backend: rt.report() for rt in loaded}


def gpu_index(local_rank: int) -> int | None:
    """The CUDA device a server rank that is ``local_rank`` on its node uses (one GPU per rank,
    round robin over the GPUs it sees), or None without a GPU (or without torch to count them)."""
    try:
        import torch
    except ImportError:
        return None
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return local_rank % count if count else None


def check_device(device: str) -> None:
    """Raise BadArgumentError unless ``device`` is CPU or GPU."""
    if device not in DEVICES:
        raise BadArgumentError(f"device {device!r} is not CPU or GPU")
