"""Fortran client staging benchmark: put / unpack latency (p50, p99) and bandwidth of the Fortran
client (fortran/) through one server rank, MPMD mode, one Fortran client rank.

    .venv/bin/python scaling/bench_fortran.py [--quick] [--out scaling/results/fortran.json]

Builds fortran/ (make) and scaling/bench_fortran_client.f90 (with mpistage-config's flags), runs
``mpiexec -n 1 mpistage-server : -n 1 bench_fortran_client``, prints a table and writes JSON
records shaped like scaling/bench_staging.py's (operation, size, bytes, count, p50_us, p99_us,
ops_per_s, mb_per_s, mode, shards, clients, client="fortran").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))

from mpistage.fortran_config import fflags, flibs, prefix  # noqa: E402
from mpistage.jobs import server_command  # noqa: E402
from mpistage.mpienv import apply_defaults  # noqa: E402

sys.path.insert(0, str(HERE.parent))
from common import run_job, summarize  # noqa: E402


def fortran_records(quick: bool) -> list[dict]:
    """Build and run the Fortran benchmark (MPMD, 1 server rank, 1 Fortran rank); its records."""
    env = apply_defaults(dict(os.environ))
    env.pop("MPISTAGE_ADDRESS", None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    run_job(["make", "-s", "-C", str(ROOT / "fortran")], env)
    where = prefix()
    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(tmp) / "bench_fortran_client"
        run_job(["mpif90", "-O2", "-ffree-line-length-none", str(HERE.parent / "bench_fortran_client.f90"),
             *fflags(where).split(), *flibs(where).split(), f"-J{tmp}", "-o", str(exe)], env)
        raw = Path(tmp) / "times.txt"
        run_job(["mpiexec", "-n", "1", *server_command(), ":", "-n", "1", str(exe), str(raw),
             *(["quick"] if quick else [])], env)
        records = []
        for line in raw.read_text().splitlines():
            op, label, nbytes, *times = line.split()
            n = int(nbytes)
            records.append({"operation": op, "size": label, "bytes": n,
                            **summarize(np.array([float(t) for t in times]), n),
                            "mode": "mpmd", "shards": 1, "clients": 1, "client": "fortran"})
    return records


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a quarter of the iterations")
    p.add_argument("--out", default=str(HERE.parent / "results" / "fortran.json"))
    args = p.parse_args()
    records = fortran_records(args.quick)
    print(f"{'op':8s}{'size':>8s}{'p50 us':>11s}{'p99 us':>11s}{'MB/s':>10s}{'ops/s':>11s}")
    for r in records:
        print(f"{r['operation']:8s}{r['size']:>8s}{r['p50_us']:>11.2f}{r['p99_us']:>11.2f}"
              f"{r['mb_per_s']:>10.1f}{r['ops_per_s']:>11.1f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(records, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
