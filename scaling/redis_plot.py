"""Latency against size (log-log) from a bench_staging.py JSON: one line per system and mode
(mpistage MPMD and connect with 1 shard and 1 client, raw MPI in one world and between two jobs,
Redis), one panel each for put and get.

    .venv/bin/python scaling/redis_plot.py scaling/results/2026-12-02-redis/staging.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def lines(records: list[dict], op: str) -> dict[str, list[tuple[int, float]]]:
    """label -> [(bytes, p50 µs)] for one operation; raw MPI rows are the same in both panels."""
    out: dict[str, list[tuple[int, float]]] = {}
    for r in records:
        if r.get("system") == "raw-mpi":
            label = f"raw MPI {r['mode'].removeprefix('raw-')} ({r['operation'].removeprefix('raw_')})"
        elif r["operation"] == op and r.get("clients") == 1 and r.get("shards") == 1:
            label = f"{r.get('system', 'mpistage')} {r['mode']}" if r.get("system") != "redis" else "Redis (redis-py)"
        else:
            continue
        out.setdefault(label, []).append((r["bytes"], r["p50_us"]))
    return {k: sorted(v) for k, v in out.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("json", type=Path)
    p.add_argument("--out", type=Path, help="PNG path (default: latency.png beside the JSON)")
    args = p.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = json.loads(args.json.read_text())
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=True)
    for ax, op in zip(axes, ("put", "get"), strict=True):
        for label, pts in lines(records, op).items():
            ax.plot([b for b, _ in pts], [t for _, t in pts], marker="o", label=label,
                    linestyle="--" if label.startswith("raw") else "-")
        ax.set(xscale="log", yscale="log", xlabel="size (bytes)", title=f"{op} p50 (1 client, 1 shard)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("latency p50 (µs)")
    axes[1].legend(fontsize=8)
    fig.suptitle("one host, 2 cores, oversubscribed: ratios within the run hold, absolute times do not", fontsize=9)
    fig.tight_layout()
    out = args.out or args.json.with_name("latency.png")
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
