"""Restrict a fine state onto a grid ``factor`` times coarser, and write it as a restart file.

The coarse members of the ensemble start from fine-run states (shared/OCEAN-NOTES.md: different
states, not perturbations, give the spread). On the C-grid, with r = factor:

* u on coarse x-face (I, J) = mean of the r fine x-faces it covers: u[I r, J r .. J r + r - 1]
  (the coarse face at x = I r dx is the fine face i = I r), so the volume flux through the face is kept;
* v likewise on the y-faces: v[I r .. I r + r - 1, J r];
* h = mean of the r x r fine cells of the block (mass is kept);
* E and kappa: the closure's own start (``e`` given, kappa = 0; the model sets kappa from E or
  from the network in its first step).

:func:`write_state` writes the layout ``src/ocean_io.f90`` reads (see ``state.read_state``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .features import block_mean
from .state import STATE_MAGIC, OceanState


def restrict(s: OceanState, factor: int, e0: float = 0.0) -> OceanState:
    """The state ``s`` on the grid ``factor`` times coarser, with E = ``e0`` and kappa = 0 everywhere.

    Raises ValueError if ``factor`` does not divide the grid.
    """
    nx, ny = s.shape
    r = int(factor)
    if r < 1 or nx % r or ny % r:
        raise ValueError(f"factor {factor} does not divide the grid {nx} x {ny}")
    cx, cy = nx // r, ny // r
    u = s.u[::r, :].reshape(cx + 1, cy, r).mean(axis=2)
    v = s.v[:, ::r].reshape(cx, r, cy + 1).mean(axis=1)
    h = block_mean(s.h, r)
    return OceanState(s.day, u, v, h, np.full((cx, cy), float(e0)), np.zeros((cx, cy)))


def write_state(path: str | Path, s: OceanState) -> Path:
    """Write ``s`` as a state file (restart) the model reads; returns the path."""
    nx, ny = s.shape
    shapes = {"u": (nx + 1, ny), "v": (nx, ny + 1), "h": (nx, ny), "e": (nx, ny), "kappa": (nx, ny)}
    for name, shape in shapes.items():
        a = getattr(s, name)
        if a.shape != shape or not np.isfinite(a).all():
            raise ValueError(f"{name} must be finite and {shape}, got {a.shape}")
    body = b"".join(np.asarray(getattr(s, name), dtype="<f8").tobytes(order="F") for name in shapes)
    p = Path(path)
    p.write_bytes(STATE_MAGIC + np.array([nx, ny], "<i4").tobytes() + np.array([s.day], "<f8").tobytes() + body)
    return p
