"""Coarse-graining of fine fields, the four features of Partee et al. (section 4.3) and the target ln EKE.

Definitions (shared/OCEAN-NOTES.md), with ⟨·⟩ the mean over blocks of r x r fine cells of the
cell-centred velocities uc, vc (face values averaged to the centre) and of h:

* truth: EKE = ½(⟨uc²⟩ − ⟨uc⟩² + ⟨vc²⟩ − ⟨vc⟩²), target ln EKE;
* features on the coarse grid (spacing r dx), at every coarse cell:
  1. MKE = ½(⟨uc⟩² + ⟨vc⟩²),
  2. relative vorticity ζ = ∂x⟨vc⟩ − ∂y⟨uc⟩ (central differences),
  3. interface slope |∇⟨h⟩| (central differences),
  4. Rd / √(dx dy) with Rd = √(g'⟨h⟩) / |f| at the cell centre;
  a missing neighbour at a wall is the zero-gradient ghost, as in the model's halo
  (``src/ocean_features.f90`` computes the same four on its own grid; r = 1 here is that);
* training samples leave out the cells next to the walls.

The raw features go through ``inference.eke_features.preprocess`` (logs, standardization) before
the network.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

NUM_FEATURES = 4
#: EKE below this (a block with uniform flow) is floored before the log
EKE_FLOOR = 1e-30
#: MKE and |∇h| are floored at this before their logs, as the model does (``src/ocean_coupling.f90``)
FEATURE_FLOOR = 1e-20


@dataclass(frozen=True)
class Basin:
    """What the features need of the model's configuration (SI units)."""

    lx: float = 1.6e6
    ly: float = 1.6e6
    f0: float = 1.0e-4
    beta: float = 2.0e-11
    gprime: float = 0.02
    hmin: float = 1.0

    @classmethod
    def from_namelist(cls, nml: Mapping[str, Mapping[str, Any]]) -> Basin:
        """The basin of a configuration (``ocean.configs``), defaults where a value is not set."""
        grid, phys = nml.get("grid", {}), nml.get("physics", {})
        d = cls()
        return cls(lx=float(grid.get("lx", d.lx)), ly=float(grid.get("ly", d.ly)), f0=float(phys.get("f0", d.f0)),
                   beta=float(phys.get("beta", d.beta)), gprime=float(phys.get("gprime", d.gprime)),
                   hmin=float(phys.get("hmin", d.hmin)))


@dataclass(frozen=True)
class CoarseFields:
    """Block means ⟨uc⟩, ⟨vc⟩, ⟨h⟩ and the sub-block EKE on the coarse grid, each (NX, NY)."""

    u: np.ndarray
    v: np.ndarray
    h: np.ndarray
    eke: np.ndarray


def cell_centred(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uc (nx, ny), vc (nx, ny) from face velocities u (nx+1, ny), v (nx, ny+1)."""
    u, v = np.asarray(u), np.asarray(v)
    if u.ndim != 2 or v.ndim != 2 or (u.shape[0] - 1, u.shape[1]) != (v.shape[0], v.shape[1] - 1):
        raise ValueError(f"face velocities must be (nx+1, ny) and (nx, ny+1), got {u.shape} and {v.shape}")
    return 0.5 * (u[:-1, :] + u[1:, :]), 0.5 * (v[:, :-1] + v[:, 1:])


def block_mean(a: np.ndarray, r: int) -> np.ndarray:
    """Mean over blocks of r x r cells: (nx, ny) -> (nx / r, ny / r). Raises ValueError if r does not divide."""
    a = np.asarray(a, dtype=np.float64)
    nx, ny = a.shape
    if r < 1 or nx % r or ny % r:
        raise ValueError(f"factor {r} does not divide the grid {nx} x {ny}")
    return a.reshape(nx // r, r, ny // r, r).mean(axis=(1, 3))


def coarse_grain(u: np.ndarray, v: np.ndarray, h: np.ndarray, r: int) -> CoarseFields:
    """Block means of the cell-centred fields and EKE = ½(⟨uc²⟩ − ⟨uc⟩² + ⟨vc²⟩ − ⟨vc⟩²)."""
    uc, vc = cell_centred(u, v)
    return coarse_grain_centred(uc, vc, h, r)


def coarse_grain_centred(uc: np.ndarray, vc: np.ndarray, h: np.ndarray, r: int) -> CoarseFields:
    """:func:`coarse_grain` of velocities already at the cell centres (uc, vc, h all (nx, ny)), as the
    model streams them. Raises ValueError for mismatched shapes or a factor that does not divide."""
    if not (np.shape(uc) == np.shape(vc) == np.shape(h)) or np.ndim(h) != 2:
        raise ValueError(f"uc, vc and h must be one (nx, ny) shape, got {np.shape(uc)}, {np.shape(vc)}, {np.shape(h)}")
    um, vm = block_mean(uc, r), block_mean(vc, r)
    eke = 0.5 * (block_mean(uc**2, r) - um**2 + block_mean(vc**2, r) - vm**2)
    return CoarseFields(um, vm, block_mean(h, r), eke)


def features(uc: np.ndarray, vc: np.ndarray, h: np.ndarray, basin: Basin) -> np.ndarray:
    """The four raw features (nx, ny, 4) of cell-centred fields on a grid spanning the basin."""
    nx, ny = h.shape
    dx, dy = basin.lx / nx, basin.ly / ny
    up, vp, hp = (np.pad(np.asarray(a, dtype=np.float64), 1, mode="edge") for a in (uc, vc, h))
    out = np.empty((nx, ny, NUM_FEATURES))
    out[..., 0] = 0.5 * (up[1:-1, 1:-1] ** 2 + vp[1:-1, 1:-1] ** 2)
    out[..., 1] = (vp[2:, 1:-1] - vp[:-2, 1:-1]) / (2 * dx) - (up[1:-1, 2:] - up[1:-1, :-2]) / (2 * dy)
    dhdx = (hp[2:, 1:-1] - hp[:-2, 1:-1]) / (2 * dx)
    dhdy = (hp[1:-1, 2:] - hp[1:-1, :-2]) / (2 * dy)
    out[..., 2] = np.sqrt(dhdx**2 + dhdy**2)
    y = (np.arange(ny) + 0.5) * dy
    f = np.abs(basin.f0 + basin.beta * (y - 0.5 * basin.ly))
    out[..., 3] = np.sqrt(basin.gprime * np.maximum(h, basin.hmin)) / f[None, :] / np.sqrt(dx * dy)
    return out


def interior(a: np.ndarray) -> np.ndarray:
    """The cells not next to a wall: a[1:-1, 1:-1, ...]."""
    return a[1:-1, 1:-1, ...]


def training_samples(u: np.ndarray, v: np.ndarray, h: np.ndarray, r: int,
                     basin: Basin) -> tuple[np.ndarray, np.ndarray]:
    """Features (N, 4) and ln EKE (N,) of the interior coarse cells of one fine state at factor r."""
    uc, vc = cell_centred(u, v)
    return training_samples_centred(uc, vc, h, r, basin)


def training_samples_centred(uc: np.ndarray, vc: np.ndarray, h: np.ndarray, r: int,
                             basin: Basin) -> tuple[np.ndarray, np.ndarray]:
    """:func:`training_samples` of cell-centred uc, vc (nx, ny), the fields the model streams."""
    c = coarse_grain_centred(uc, vc, h, r)
    x = interior(features(c.u, c.v, c.h, basin)).reshape(-1, NUM_FEATURES)
    y = np.log(np.maximum(interior(c.eke), EKE_FLOOR)).reshape(-1)
    return x, y


def floored(x: np.ndarray) -> np.ndarray:
    """A copy of raw features (N, 4) with MKE and |∇h| floored at :data:`FEATURE_FLOOR`, as the model
    floors what it sends, so that the logs of the preprocessing are finite."""
    out = np.array(x, dtype=np.float64)
    out[:, 0] = np.maximum(out[:, 0], FEATURE_FLOOR)
    out[:, 2] = np.maximum(out[:, 2], FEATURE_FLOOR)
    return out
