"""What every benchmark under ``scaling/`` shares: one summary of a sample of timings, and one
bounded way to run a job (its whole process group is killed on timeout)."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence

import numpy as np

from mpistage.jobs import JobTimeout, run_bounded


def summarize(times: np.ndarray, nbytes: int = 0) -> dict[str, float]:
    """count, p50 and p99 (µs), operations per second and MB/s at the median, of ``times`` (s)."""
    p50, p99 = np.percentile(times, [50, 99])
    return {"count": int(times.size), "p50_us": round(p50 * 1e6, 2), "p99_us": round(p99 * 1e6, 2),
            "ops_per_s": round(1 / times.mean(), 1), "mb_per_s": round(nbytes / p50 / 1e6, 1)}


def run_job(cmd: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 600,
            capture: bool = True) -> subprocess.CompletedProcess:
    """Run a benchmark job; exit with its output when it fails or runs past ``timeout``."""
    try:
        result = run_bounded(cmd, timeout, env, capture=capture)
    except JobTimeout as exc:
        raise SystemExit(str(exc)[-3000:]) from None
    if result.returncode:
        raise SystemExit(f"failed ({result.returncode}): {' '.join(map(str, cmd))}\n{result.stdout[-3000:]}")
    return result
