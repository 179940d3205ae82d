"""Launcher costs on this machine: member start time (launch call to the member's first Python
line, median over an ensemble) and the time from ``exp.start`` to every member connected, with
spawn and with the mpiexec fallback; prints a table and writes JSON.

    python scaling/bench_launcher.py [--sizes 4 8] [--out launcher.json]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

MEMBER = Path(__file__).resolve().parents[1] / "tests" / "scenarios" / "launcher_member.py"
ONE_RUN = r"""
import json, sys, time
from mpistage.launcher import Experiment
launcher, exp_path, n, member = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
exp = Experiment("bench", exp_path=exp_path, launcher=launcher)
db = exp.create_database(db_nodes=1)
exp.start(db)
rs = exp.create_run_settings(sys.executable, [member])
ens = exp.create_ensemble("m", run_settings=rs, replicas=n)
ens.enable_key_prefixing()
exp.generate(ens)
t0 = time.time()
exp.start(ens, block=False)
exp.poll(verbose=False)
print("RESULT " + json.dumps({"t0": t0, "jobs": [j.to_dict() for j in exp._jobs.values()],
                              "status": [s.value for s in exp.get_status(ens)]}))
exp.close()
"""


def one(launcher: str, n: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="mpistage-bench-") as tmp:
        out = subprocess.run([sys.executable, "-c", ONE_RUN, launcher, tmp, str(n), str(MEMBER)], capture_output=True,
                             text=True, timeout=300)
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            raise SystemExit(f"{launcher} x{n} failed:\n{out.stdout}\n{out.stderr}")
        data = json.loads(line[7:])
        starts, connected = [], []
        for job in data["jobs"]:
            text = Path(job["run_dir"], f"{job['name']}.out").read_text()
            m = re.search(r"started_at=([\d.]+) connected_at=([\d.]+)", text)
            starts.append(float(m.group(1)) - job["started"])
            connected.append(float(m.group(2)))
    assert all(s == "Completed" for s in data["status"]), data["status"]
    return {"launcher": launcher, "members": n, "start_median_s": statistics.median(starts),
            "all_connected_s": max(connected) - data["t0"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sizes", type=int, nargs="+", default=[4, 8])
    p.add_argument("--out", default="launcher.json")
    args = p.parse_args()
    rows = [one(launcher, n) for n in args.sizes for launcher in ("spawn", "mpiexec")]
    print(f"{'launcher':<9} {'members':>7} {'start median (s)':>17} {'start -> all connected (s)':>27}")
    for r in rows:
        print(f"{r['launcher']:<9} {r['members']:>7} {r['start_median_s']:>17.2f} {r['all_connected_s']:>27.2f}")
    Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
