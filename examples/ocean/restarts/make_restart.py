"""Regenerate ``fine_year5.bin.gz``: the fine (12.5 km) basin spun up for 5 years from rest.

    .venv/bin/python examples/ocean/restarts/make_restart.py [--ranks 2] [--years 5]

Cold start (h = H0 plus 1 m of uniform noise, seed 1), ``configs.FINE``, then the state's clock is
set to day 0 (the example's day 0 is the end of the spin-up) and the file is gzipped. Takes
minutes (about 0.1-0.4 s wall per model day on this 2-core machine; shared/OCEAN-NOTES.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
from ocean import configs, restrict, state  # noqa: E402
from ocean.build import build  # noqa: E402

OUTPUT = HERE / "fine_year5.bin.gz"


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    from mpistage.jobs import mpi_environ

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", type=int, default=1, help="MPI ranks of the spin-up (default 1)")
    p.add_argument("--years", type=int, default=5, help="length of the spin-up (default 5)")
    p.add_argument("--out", type=Path, default=OUTPUT, help=f"gzipped state file (default {OUTPUT.name})")
    args = p.parse_args(argv)
    exe = build()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        nml = configs.merged(configs.FINE, run={"days": 365 * args.years, "perturb": 1.0, "seed": 1,
                                                "restart_out": "spun.bin", "diag_file": "diag.txt"})
        state.write_namelist(work / "spin.nml", nml)
        subprocess.run(["mpiexec", "-n", str(args.ranks), str(exe), "spin.nml"], cwd=work, check=True,
                       env=mpi_environ())
        spun = dataclasses.replace(state.read_state(work / "spun.bin"), day=0.0)
        restrict.write_state(work / "day0.bin", spun)
        args.out.write_bytes(gzip.compress((work / "day0.bin").read_bytes(), 9))
        last = (work / "diag.txt").read_text().splitlines()[-2].split()
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes); last spin-up day {last[0]}: KE {last[1]} m^2/s^2")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
