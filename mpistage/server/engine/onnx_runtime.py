"""The ONNX runtime (backend names ``ONNX`` and ``ORT``): models run by onnxruntime, imported on
the first ``SET_MODEL`` with one of these names (see :mod:`.runtime`).

Loading is safe for bytes from any client (docs/engine.md, "Trust model"): onnxruntime runs no
client code, and before a session is created :mod:`.onnx_check` refuses every tensor with external
data; the session's external-data folder is an empty directory of its own, no custom-op library is
registered, and the only execution providers are CPU and (where the wheel has it) CUDA.

Inputs are bound to the model's declared inputs in order, outputs come back in the model's
declared order; every output must be a tensor (a scikit-learn classifier is converted with
``options={"zipmap": False}``). A model whose inputs all have a symbolic first dimension can be
batched; otherwise each request runs alone.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from typing import Any, ClassVar

import numpy as np
import onnxruntime as ort

from ...errors import BadArgumentError, MpistageError, ServerRuntimeError
from .onnx_check import checked_model
from .runtime import RuntimeOptions, gpu_index

MAX_ERROR_CHARS = 2000
CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"


def is_symbolic(dim: Any) -> bool:
    """onnxruntime shows a symbolic dimension as its name (str) or None."""
    return not isinstance(dim, int)


def run_error(what: str, exc: Exception) -> MpistageError:
    """The typed error for a failed ``session.run``."""
    text = str(exc).strip()[:MAX_ERROR_CHARS]
    if any(s in text.lower() for s in ("bad_alloc", "out of memory", "failed to allocate")):
        return ServerRuntimeError(f"{what} ran out of memory: {text}")
    return ServerRuntimeError(f"{what} failed: {text}")


class OnnxRunnable:
    """One onnxruntime session: inputs bound by position to the declared inputs."""

    def __init__(self, what: str, session: ort.InferenceSession, device: str) -> None:
        self.what = what
        self.session = session
        self.device = device
        self.inputs = [i.name for i in session.get_inputs()]
        self.arity = (len(self.inputs), len(self.inputs))
        shapes = [i.shape for i in session.get_inputs()]
        fixed = [s for s in shapes if not s or not is_symbolic(s[0])]
        self.batchable = bool(shapes) and not fixed
        self.batching = ("dynamic: first input dimension is symbolic" if self.batchable else
                         f"off: first input dimension is fixed ({fixed[0][0] if fixed and fixed[0] else 'scalar'})"
                         ", one request per run")

    def __call__(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        try:
            outs = self.session.run(None, dict(zip(self.inputs, inputs, strict=True)))
        except Exception as exc:  # onnxruntime's Fail / InvalidArgument / RuntimeException
            raise run_error(self.what, exc) from None
        return [np.ascontiguousarray(o) for o in outs]


class OnnxRuntime:
    """onnxruntime on the CPU or one CUDA device (see :class:`~.runtime.ModelRuntime`)."""

    backend: ClassVar[str] = "ONNX"

    def __init__(self, options: RuntimeOptions) -> None:
        self.threads = options.threads
        # Where onnxruntime would look for external data: an empty folder of our own (a second
        # wall behind onnx_check, which refuses such models before a session exists).
        self.empty_dir = tempfile.mkdtemp(prefix="mpistage-onnx-empty-")
        atexit.register(shutil.rmtree, self.empty_dir, True)

    def _providers(self, device: str, local_rank: int) -> tuple[list[Any], str, str | None]:
        """(providers, device name, warning)."""
        if device == "CPU":
            return [CPU], "cpu", None
        index = gpu_index(local_rank)
        if index is None:
            return [CPU], "cpu", "device GPU was requested but this server rank sees no GPU: running on CPU"
        if CUDA not in ort.get_available_providers():
            return [CPU], "cpu", ("device GPU was requested but this onnxruntime has no CUDA provider "
                                  "(install onnxruntime-gpu): running on CPU")
        return [(CUDA, {"device_id": index}), CPU], f"cuda:{index}", None

    def _session_options(self) -> ort.SessionOptions:
        so = ort.SessionOptions()
        so.add_session_config_entry("session.model_external_initializers_file_folder_path", self.empty_dir)
        so.inter_op_num_threads = 1
        if self.threads:
            so.intra_op_num_threads = self.threads
        return so

    def load_model(self, name: str, data: bytes, device: str, local_rank: int) -> tuple[OnnxRunnable, str | None]:
        checked_model(name, data)
        providers, dev, warning = self._providers(device, local_rank)
        try:
            session = ort.InferenceSession(data, self._session_options(), providers=providers)
        except Exception as exc:
            raise BadArgumentError(f"model {name!r} is an ONNX model that onnxruntime cannot load: "
                                   f"{str(exc).strip()[:MAX_ERROR_CHARS]}") from None
        for out in session.get_outputs():
            if not out.type.startswith("tensor("):
                raise BadArgumentError(
                    f"model {name!r}: output {out.name!r} is a {out.type}, not a tensor (convert a "
                    f"scikit-learn classifier with skl2onnx options={{'zipmap': False}})")
        if dev.startswith("cuda") and CUDA not in session.get_providers():
            dev, warning = "cpu", "onnxruntime could not start its CUDA provider: running on CPU"
        return OnnxRunnable(f"model {name!r}", session, dev), warning

    def compile_script(self, name: str, source: str, device: str, local_rank: int) -> Any:
        raise BadArgumentError("the ONNX runtime has no scripts: give preprocessing as an ONNX model")

    def report(self) -> dict[str, Any]:
        return {"onnxruntime_version": ort.__version__, "providers": ort.get_available_providers(),
                "intra_op_threads": self.threads or "default"}
