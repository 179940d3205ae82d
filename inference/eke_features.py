"""EKE feature preprocessing from Partee et al., section 4.3.

Features are ``(N, 4)`` with columns, in order:

0. surface mean kinetic energy (MKE)        -> ``ln(x)``
1. surface relative vorticity               -> ``f_p(x) = sign(x) * (ln|x| + C)``, ``f_p(0) = 0``
2. column-averaged isopycnal slope          -> ``ln(x)``
3. Rossby radius / sqrt(cell area)          -> unchanged

followed by standardization ``(x - means) / stds`` with statistics fitted
*after* the log transforms (:func:`fit_standardization`).

Three equivalent implementations are provided: plain TorchScript-compilable
functions (:func:`signed_log`, :func:`log_transform`, :func:`preprocess`), the
same code as a source string (:data:`EKE_PREPROCESS_SCRIPT`) for shipping to
the server with ``set_script``, and a numpy reference
(:func:`preprocess_reference`).
"""

from __future__ import annotations

import inspect

import numpy as np
import torch
from torch import Tensor

#: The paper's constant C in f_p (chosen so that C > -ln(eps) for float eps).
SIGNED_LOG_C: float = 36.0

#: Number of input features per point.
EKE_NUM_FEATURES: int = 4

#: Name of the entry-point function inside :data:`EKE_PREPROCESS_SCRIPT`.
EKE_PREPROCESS_FUNCTION: str = "preprocess"

def signed_log(x: Tensor) -> Tensor:
    """f_p(x) = sign(x) * (ln|x| + 36), exactly 0 where x == 0."""
    zero = x == 0
    safe = torch.where(zero, torch.ones_like(x), torch.abs(x))
    y = torch.sign(x) * (torch.log(safe) + 36.0)
    return torch.where(zero, torch.zeros_like(x), y)


def log_transform(features: Tensor) -> Tensor:
    """Apply the per-column log transforms to (N, 4) raw features."""
    if not features.is_floating_point():
        features = features.to(torch.float32)
    mke = torch.log(features[:, 0])
    vort = signed_log(features[:, 1])
    slope = torch.log(features[:, 2])
    rossby = features[:, 3]
    return torch.stack([mke, vort, slope, rossby], dim=1)


def preprocess(features: Tensor, means: Tensor, stds: Tensor) -> Tensor:
    """Log-transform then standardize (N, 4) raw features; scriptable."""
    x = log_transform(features)
    means = means.to(dtype=x.dtype, device=x.device).reshape(1, 4)
    stds = stds.to(dtype=x.dtype, device=x.device).reshape(1, 4)
    return (x - means) / stds


#: TorchScript source of the three functions above (their own source, so the two cannot drift);
#: compile with ``torch.jit.CompilationUnit(EKE_PREPROCESS_SCRIPT)`` and call
#: ``cu.preprocess(features, means, stds)``, or send it with ``Client.set_script``.
EKE_PREPROCESS_SCRIPT: str = "\n\n".join(inspect.getsource(f) for f in (signed_log, log_transform, preprocess))


def signed_log_reference(x: np.ndarray) -> np.ndarray:
    """Numpy f_p(x) = sign(x) * (ln|x| + C), 0 at x == 0."""
    x = np.asarray(x)
    zero = x == 0
    safe = np.where(zero, 1.0, np.abs(x))
    return np.where(zero, 0.0, np.sign(x) * (np.log(safe) + SIGNED_LOG_C)).astype(
        x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
    )


def log_transform_reference(features: np.ndarray) -> np.ndarray:
    """Numpy version of :func:`log_transform`."""
    f = np.asarray(features)
    if not np.issubdtype(f.dtype, np.floating):
        f = f.astype(np.float32)
    _check_shape(f)
    out = np.empty_like(f)
    out[:, 0] = np.log(f[:, 0])
    out[:, 1] = signed_log_reference(f[:, 1])
    out[:, 2] = np.log(f[:, 2])
    out[:, 3] = f[:, 3]
    return out


def preprocess_reference(features: np.ndarray, means: np.ndarray, stds: np.ndarray) -> np.ndarray:
    """Numpy reference of :func:`preprocess` (same dtype as ``features``)."""
    x = log_transform_reference(features)
    m = np.asarray(means, dtype=x.dtype).reshape(1, EKE_NUM_FEATURES)
    s = np.asarray(stds, dtype=x.dtype).reshape(1, EKE_NUM_FEATURES)
    return (x - m) / s


def fit_standardization(features_raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column float64 means and stds of the log-transformed raw features.

    A zero standard deviation is replaced by 1 so standardization stays finite.
    """
    x = log_transform_reference(np.asarray(features_raw, dtype=np.float64))
    means = x.mean(axis=0)
    stds = x.std(axis=0)
    stds = np.where(stds > 0, stds, 1.0)
    return means, stds


def _check_shape(f: np.ndarray) -> None:
    if f.ndim != 2 or f.shape[1] != EKE_NUM_FEATURES:
        raise ValueError(f"features must be (N, {EKE_NUM_FEATURES}), got {f.shape}")
