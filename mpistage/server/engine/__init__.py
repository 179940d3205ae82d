"""The inference engine of one shard: request decoding (:mod:`.requests`), the registry of
models and scripts (:mod:`.registry`), batching (:mod:`.batcher`), scheduling
(:mod:`.engine`) and the model-runtime interface (:mod:`.runtime`; torch lives only in
:mod:`.torch_runtime`, imported when the first model or script arrives)."""

from .engine import InferenceEngine
from .runtime import RuntimeOptions

__all__ = ["InferenceEngine", "RuntimeOptions"]
