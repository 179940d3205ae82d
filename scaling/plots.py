"""Plots of a sweep's results (scaling/sweep.py): Fig. 2-style violin plots and throughput.

    .venv/bin/python scaling/plots.py scaling/results/<date>/

Writes into that directory, per workload: ``violins_<workload>.png`` (one panel per call: put,
script, model, unpack; the time of each call against the client count, one colour per shard
count, whiskers from minimum to maximum, dashed lines through the means; MPMD, one host, weak
scaling, Python clients, as in the paper) and ``throughput_<workload>.png`` (iterations per
second against clients: every mode, host count, scaling and client language that ran); and,
when scaling/perf_model.py has written ``model.json``, ``model.png`` (the model against the
measurements, and its predictions for the paper's runs beside the published read-offs). Every plot
says how many cores ran it: on this machine everything is oversubscribed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from collections import defaultdict
from pathlib import Path

import numpy as np

CALL_TITLES = {"put": "put_tensor", "script": "run_script", "model": "run_model", "unpack": "unpack_tensor"}


def load_records(result_dir: Path) -> list[dict]:
    """records.csv as dicts with typed fields."""
    with (result_dir / "records.csv").open() as f:
        return [{**r, "hosts": int(r["hosts"]), "shards": int(r["shards"]), "clients": int(r["clients"]),
                 "rank": int(r["rank"]), "iteration": int(r["iteration"]), "seconds": float(r["seconds"])}
                for r in csv.DictReader(f)]


def oversubscription_note(result_dir: Path) -> str:
    """The line every plot carries: cores, load, and that servers and clients share them."""
    info = json.loads((result_dir / "run.json").read_text()) if (result_dir / "run.json").exists() else {}
    start, end = info.get("machine_start", {}), info.get("machine_end", {})
    cpus = start.get("cpus", os.cpu_count())
    loads = [m["load_avg"][0] for m in (start, end) if m.get("load_avg")]
    load = f"load average {min(loads):.1f}-{max(loads):.1f}" if loads else "load unknown"
    return (f"OVERSUBSCRIBED: servers + clients (+ other users' jobs, {load}) on {cpus} CPU cores; "
            f"{start.get('date', '')[:10]}")


def violins(records: list[dict], workload: str, out: Path, note: str) -> Path | None:
    """Fig. 2 style: per call, violins against clients, one colour per shard count, mean lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sel = [r for r in records if r["workload"] == workload and r["mode"] == "mpmd" and r["hosts"] == 1
           and r["scaling"] == "weak" and r["client"] == "python"]
    if not sel:
        return None
    shards = sorted({r["shards"] for r in sel})
    clients = sorted({r["clients"] for r in sel})
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.2))
    width = 0.8 / len(shards)
    for ax, (call, title) in zip(axes, CALL_TITLES.items(), strict=True):
        for k, s in enumerate(shards):
            xs, data = [], []
            for i, c in enumerate(clients):
                t = [r["seconds"] for r in sel if r["call"] == call and r["shards"] == s and r["clients"] == c]
                if t:
                    xs.append(i + (k - (len(shards) - 1) / 2) * width)
                    data.append(np.array(t))
            if not data:
                continue
            parts = ax.violinplot(data, positions=xs, widths=width * 0.9, showextrema=True, showmeans=False)
            for body in parts["bodies"]:
                body.set_facecolor(colours[k % len(colours)])
                body.set_alpha(0.45)
            for name in ("cmins", "cmaxes", "cbars"):
                parts[name].set_color(colours[k % len(colours)])
            ax.plot(xs, [d.mean() for d in data], "--o", color=colours[k % len(colours)], ms=3,
                    label=f"{s} shard{'s' if s > 1 else ''}")
        ax.set_xticks(range(len(clients)), [str(c) for c in clients])
        ax.set_xlabel("clients")
        ax.set_title(title)
        ax.set_yscale("log")
    axes[0].set_ylabel("seconds per call")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"paper loop ({workload}), MPMD, weak scaling: time per call (whiskers min-max, dashed: means)")
    fig.text(0.5, 0.005, note, ha="center", fontsize=9, color="darkred")
    fig.tight_layout(rect=(0, 0.04, 1, 0.95))
    path = out / f"violins_{workload}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def throughput(summaries: list[dict], workload: str, out: Path, note: str) -> Path | None:
    """Iterations per second (all ranks together) against clients, one line per kind of run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for s in summaries:
        if s["ok"] and s["workload"] == workload:
            where = "1 host" if s["hosts"] == 1 else f"{s['hosts']} vhosts"
            key = f"{s['mode']}, {where}, {s['scaling']}, {s['client']}, {s['shards']} shard(s)"
            lines[key].append((s["clients"], s["throughput_it_per_s"]))
    if not lines:
        return None
    fig, ax = plt.subplots(figsize=(8, 5))
    for key, pts in sorted(lines.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "-o" if len(pts) > 1 else "s", label=key)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("clients")
    ax.set_ylabel("iterations per second (all ranks)")
    ax.set_title(f"paper loop ({workload}): throughput")
    ax.legend(fontsize=7)
    fig.text(0.5, 0.005, note, ha="center", fontsize=8, color="darkred")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    path = out / f"throughput_{workload}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def model_plot(model: dict, out: Path, note: str) -> Path:
    """The performance model: predicted against measured means (this machine), and its
    predictions for the paper's configurations beside the published read-offs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    markers = dict(zip(CALL_TITLES, "os^v", strict=True))
    for row in model["check"]:
        multi = row["hosts"] > 1
        for call, m in markers.items():
            if call in row:
                left.loglog(row[call]["predicted_mean"], row[call]["measured_mean"], m,
                            color="tab:red" if multi else "tab:blue", alpha=0.7, ms=5)
    lo, hi = left.get_xlim()
    left.plot([lo, hi], [lo, hi], "k-", lw=0.8)
    left.plot([lo, hi], [lo * 2, hi * 2], "k:", lw=0.6)
    left.plot([lo, hi], [lo / 2, hi / 2], "k:", lw=0.6)
    left.set_xlabel("model: mean seconds per call")
    left.set_ylabel("measured: mean seconds per call")
    left.set_title("this machine: o put, s script, ^ model, v unpack (red: virtual hosts); dotted: x2")
    calls = ("put", "script", "model")
    colours = {"put": "tab:green", "script": "tab:orange", "model": "tab:purple"}
    pub = model["published"]
    for assumptions, style in (("calibrated", "-"), ("independent", "--")):
        for call in calls:
            pts = sorted((r["clients"] / r["nodes"], r[call]["mean"]) for r in model["paper"]
                         if r["assumptions"] == assumptions)
            right.loglog([p[0] for p in pts], [p[1] for p in pts], style, color=colours[call],
                         label=f"{call} ({assumptions})")
    for call in calls:
        right.loglog(pub["clients"] / pub["nodes"], pub[call], "*", ms=12, color=colours[call])
    right.set_xlabel("clients per database node (960-7,680 clients on 4-16 nodes)")
    right.set_ylabel("mean seconds per call")
    right.set_title("the paper's runs: model (lines), SmartSim-Scaling read-offs (stars)")
    right.legend(fontsize=7)
    fig.text(0.5, 0.005, note + " (left panel)", ha="center", fontsize=8, color="darkred")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    path = out / "model.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def make_plots(result_dir: Path) -> list[Path]:
    """Every plot for a result directory; the paths written."""
    records = load_records(result_dir)
    summaries = json.loads((result_dir / "summary.json").read_text())
    note = oversubscription_note(result_dir)
    made = []
    for workload in sorted({r["workload"] for r in records}):
        for path in (violins(records, workload, result_dir, note), throughput(summaries, workload, result_dir, note)):
            if path is not None:
                made.append(path)
    if (result_dir / "model.json").exists():
        made.append(model_plot(json.loads((result_dir / "model.json").read_text()), result_dir, note))
    return made


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("result_dir", type=Path)
    for path in make_plots(p.parse_args().result_dir):
        print(path)


if __name__ == "__main__":
    main()
