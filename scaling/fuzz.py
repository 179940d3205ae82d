"""The long fuzz, on demand: tests/scenarios/wire_fuzz.py (mutated raw messages mixed with valid
traffic, a bystander client, every valid value read back) for several seeds, each against freshly
started servers (MPMD, 2 shards, 2 client ranks). Prints one row per seed and writes
``scaling/results/fuzz.json``.

    .venv/bin/python scaling/fuzz.py --messages 150000 --seeds 4     # about 3 minutes
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from common import run_job

from mpistage.jobs import server_command

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "tests" / "scenarios" / "wire_fuzz.py"
SHARDS = 2
COLUMNS = ["seed", "mutated", "valid_pairs", "wrong", "reread_wrong", "bystander_round_trips", "bystander_wrong",
           "discarded_messages", "internal_errors", "shards_alive", "worst_ms", "seconds"]


def one(messages: int, seed: int, timeout: float) -> dict[str, float]:
    cmd = ["mpiexec", "-n", str(SHARDS), *server_command(), "--payload-timeout", "2", ":", "-n", "2",
           sys.executable, str(SCENARIO), str(messages), str(seed)]
    out = run_job(cmd, timeout=timeout).stdout
    line = out.split("fuzz stats ", 1)[1].split("\n", 1)[0]
    stats = {k: float(v) for k, v in (kv.split("=") for kv in line.split())}
    return {"seed": seed, **stats}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=50_000, help="mutated messages per seed")
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--timeout", type=float, default=1800, help="seconds per seed")
    args = p.parse_args()
    rows = []
    t0 = time.monotonic()
    print(" ".join(f"{c:>14}" for c in COLUMNS), flush=True)
    for seed in range(args.seeds):
        row = one(args.messages, 100 + seed, args.timeout)
        rows.append(row)
        print(" ".join(f"{row.get(c, 0):>14g}" for c in COLUMNS), flush=True)
    total = {"messages": sum(r["mutated"] for r in rows), "valid_pairs": sum(r["valid_pairs"] for r in rows),
             "bystander_round_trips": sum(r["bystander_round_trips"] for r in rows),
             "wrong": sum(r["wrong"] + r["reread_wrong"] + r["bystander_wrong"] for r in rows),
             "shards_dead": sum(SHARDS - r["shards_alive"] for r in rows),
             "internal_errors": sum(r["internal_errors"] for r in rows), "seconds": round(time.monotonic() - t0, 1)}
    print(f"total: {total['messages']:.0f} mutated messages, {total['valid_pairs']:.0f} valid pairs verified, "
          f"{total['bystander_round_trips']:.0f} bystander round trips, {total['wrong']:.0f} wrong values, "
          f"{total['shards_dead']:.0f} shards dead, {total['internal_errors']:.0f} internal errors, "
          f"{total['seconds']} s", flush=True)
    out = Path(__file__).resolve().parent / "results" / "fuzz.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "total": total}, indent=1))


if __name__ == "__main__":
    main()
