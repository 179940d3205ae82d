"""Read the ocean model's state and features files; write its namelists.

File layouts are those of ``src/ocean_io.f90``: native little-endian streams with an 8-byte magic,
int32 nx, ny, a float64 model day, then float64 arrays in Fortran order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

STATE_MAGIC = b"OCEANSW1"
FEATURES_MAGIC = b"OCEANFT1"
HEADER_BYTES = 24
NUM_FEATURES = 4


@dataclass(frozen=True)
class OceanState:
    """One basin-wide state: u (nx+1, ny) and v (nx, ny+1) on the faces, h, e, kappa (nx, ny) at centres."""

    day: float
    u: np.ndarray
    v: np.ndarray
    h: np.ndarray
    e: np.ndarray
    kappa: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        """(nx, ny) cells."""
        return self.h.shape


def _read(path: str | Path, magic: bytes) -> tuple[int, int, float, np.ndarray]:
    data = Path(path).read_bytes()
    if len(data) < HEADER_BYTES or data[:8] != magic:
        raise ValueError(f"{path}: not an ocean {magic.decode()} file")
    nx, ny = (int(n) for n in np.frombuffer(data, "<i4", 2, 8))
    day = float(np.frombuffer(data, "<f8", 1, 16)[0])
    return nx, ny, day, np.frombuffer(data, "<f8", offset=HEADER_BYTES)


def read_state(path: str | Path) -> OceanState:
    """Read a state file (restart or snapshot). Raises ValueError if it is not one or is truncated."""
    nx, ny, day, body = _read(path, STATE_MAGIC)
    sizes = [(nx + 1, ny), (nx, ny + 1), (nx, ny), (nx, ny), (nx, ny)]
    if body.size != sum(a * b for a, b in sizes):
        raise ValueError(f"{path}: {body.size} values, expected {sum(a * b for a, b in sizes)} for {nx} x {ny}")
    arrays, start = [], 0
    for shape in sizes:
        n = shape[0] * shape[1]
        arrays.append(body[start:start + n].reshape(shape, order="F").copy())
        start += n
    return OceanState(day, *arrays)


def read_features(path: str | Path) -> tuple[float, np.ndarray]:
    """Read a features file: (model day, f of shape (nx, ny, 4)). Raises ValueError if malformed."""
    nx, ny, day, body = _read(path, FEATURES_MAGIC)
    if body.size != nx * ny * NUM_FEATURES:
        raise ValueError(f"{path}: {body.size} values, expected {nx * ny * NUM_FEATURES}")
    return day, body.reshape((nx, ny, NUM_FEATURES), order="F").copy()


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return ".true." if v else ".false."
    if isinstance(v, str):
        if "'" in v:
            raise ValueError(f"namelist strings cannot contain a quote: {v!r}")
        return f"'{v}'"
    if isinstance(v, (int, float, np.integer, np.floating)):
        return repr(float(v)) if isinstance(v, (float, np.floating)) else str(int(v))
    raise TypeError(f"cannot write {type(v).__name__} {v!r} to a namelist")


def write_namelist(path: str | Path, groups: Mapping[str, Mapping[str, Any]]) -> Path:
    """Write ``groups`` (group -> {variable: value}) as a Fortran namelist file; returns the path."""
    lines = []
    for name, values in groups.items():
        body = ", ".join(f"{k}={_value(v)}" for k, v in values.items())
        lines.append(f"&{name} {body} /")
    p = Path(path)
    p.write_text("\n".join(lines) + "\n")
    return p
