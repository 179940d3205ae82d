"""The truth the coarse members are scored against: time-mean coarse-grained EKE of the fine run.

At each factor r, EKE of a snapshot is the sub-block variance ½(⟨u²⟩ − ⟨u⟩² + ⟨v²⟩ − ⟨v⟩²) over r x r
fine cells (:func:`ocean.features.coarse_grain_centred`), on the whole coarse grid (wall cells
included); the truth map is its mean over the snapshots. The trainer accumulates it from the
snapshots it reads and writes ``truth_f<r>.npy``;
``python examples/ocean/truth.py --factors 4 8 --out DIR STATE...`` computes it from fine state files.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ocean import state  # noqa: E402
from ocean.features import coarse_grain_centred  # noqa: E402
from ocean.snapshots import Snapshot  # noqa: E402


def truth_path(directory: str | Path, factor: int) -> Path:
    """Where the truth map at ``factor`` is written: DIR/truth_f<factor>.npy."""
    return Path(directory) / f"truth_f{factor}.npy"


class TruthAccumulator:
    """Running time mean of coarse-grained EKE at each of ``factors``."""

    def __init__(self, factors: Iterable[int]) -> None:
        self.factors = [int(r) for r in factors]
        self.days: list[int] = []
        self._sums: dict[int, np.ndarray] = {}

    def add(self, snap: Snapshot) -> None:
        """Add one snapshot. Raises ValueError if a factor does not divide its grid or the grid changed."""
        for r in self.factors:
            eke = coarse_grain_centred(snap.u, snap.v, snap.h, r).eke
            total = self._sums.get(r)
            if total is not None and total.shape != eke.shape:
                raise ValueError(f"snapshot of day {snap.day} is on another grid ({eke.shape} at factor {r}, "
                                 f"earlier {total.shape})")
            self._sums[r] = eke if total is None else total + eke
        self.days.append(snap.day)

    def mean(self, factor: int) -> np.ndarray:
        """Time-mean EKE (m²/s²) at ``factor``, (nx / factor, ny / factor). Raises ValueError before any snapshot."""
        if not self.days:
            raise ValueError("no snapshot added yet")
        return self._sums[factor] / len(self.days)

    def save(self, directory: str | Path) -> list[Path]:
        """Write every factor's mean to :func:`truth_path`; returns the paths (none before any snapshot)."""
        if not self.days:
            return []
        paths = []
        for r in self.factors:
            p = truth_path(directory, r)
            np.save(p, self.mean(r))
            paths.append(p)
        return paths


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: truth maps from fine state files (restarts or snapshot files of the model)."""
    p = argparse.ArgumentParser(description="time-mean coarse-grained EKE of fine state files")
    p.add_argument("states", nargs="+", type=Path, help="fine state files")
    p.add_argument("--factors", type=int, nargs="+", default=[4, 8])
    p.add_argument("--out", type=Path, default=Path("."))
    args = p.parse_args(argv)
    acc = TruthAccumulator(args.factors)
    for path in args.states:
        acc.add(Snapshot.from_state(state.read_state(path)))
    args.out.mkdir(parents=True, exist_ok=True)
    for r, path in zip(acc.factors, acc.save(args.out), strict=True):
        print(f"factor {r}: mean EKE {acc.mean(r).mean():.4g} m^2/s^2 over {len(acc.days)} states -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
