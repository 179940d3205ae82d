"""A queueing model of the paper's loop: clients sharing server nodes, fitted on service times
measured here, checked against this machine's sweeps, and used to predict the paper's runs.

    .venv/bin/python scaling/perf_model.py scaling/results/<date>/      # fit, check, predict
    .venv/bin/python scaling/perf_model.py --measure-batch DIR          # also time batched models

**The model.** Each client runs a closed loop: put, script, model, unpack, then its own work
between iterations (``think``). Keys (and with them scripts and models, which run on the shard
of their input) spread evenly over the nodes. Mean value analysis (MVA) of that closed network,
by recursion over the client count (arrival theorem: a call finds the queues of the network with
one client fewer), with ``Q_j`` the mean number of clients in call ``j`` at one node:

* ``fcfs`` (this machine): per node two first-come-first-served stations, the request loop
  (put, unpack) and the inference engine (script, model; one worker runs one job at a time), so
  ``R_c = s_c + sum_j Q_j s_j`` over the calls ``j`` of ``c``'s station: a script waits behind
  the models ahead of it.
* ``ps`` (the paper): per node one processor-sharing station for every call (concurrent work
  shares the GPU, the network and Redis's threads), ``R_c = s_c (1 + sum_j Q_j)``: each call's
  mean grows in proportion to its own service time, which is what the published read-offs show
  (under FCFS every call of a station would wait the same).

Batching: model requests waiting together run as one batch; with ``b`` of them a request costs
``t(b) / b``, ``t`` the measured batch time (``--measure-batch``; without it no gain is
assumed), ``b = 1 + Q_model`` capped at the batch size, solved by fixed-point iteration. Tail:
the number of clients ahead is taken as geometric with the MVA mean (``p99``: 1 % find more), at
most every other client whose keys sit on that node, ``(N - 1)/nodes``, which gives ``max``.

**On this machine** every shard shares the same 2 cores (torch uses both for one inference), so
all shards together are *one* node: more shards spread keys and request loops but not compute.
**For the paper** each database node is its own station (4, 8, 16), with the service times
written down in :data:`PAPER_ASSUMPTIONS`.

**Fit.** Service times are the means of each call in the one-client, one-shard MPMD runs of each
workload (iteration 0, which compiles the TorchScript, left out); ``think`` is the mean of an
iteration's time less its four calls. On this machine the clients share the 2 cores with the
servers (and with other users), so every service time stretches with the client count: one
parameter, ``slowdown`` (service x ``1 + slowdown (N - 1)``), is fitted on one call (``run_model``
of the one-host MPMD weak runs); everything else (the other calls, throughput, strong scaling,
connect, launcher, Fortran, virtual hosts) is a check. For the paper it is 0 (dedicated nodes).
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

CALLS = ("put", "script", "model", "unpack")


@dataclass
class ServiceTimes:
    """Per-call service times (s) at one node, the client's own time per iteration, and the
    model's batch curve ``batch_time[b] = t(b) / t(1)`` (b requests in one model call)."""

    put: float
    script: float
    model: float
    unpack: float
    think: float = 0.0
    batch_time: dict[int, float] = field(default_factory=dict)
    #: every service time x (1 + slowdown (N - 1)) with N clients: on a machine whose cores the
    #: clients share with the servers (their polling, the OS), fitted by :func:`fit_slowdown`
    slowdown: float = 0.0

    def call(self, name: str) -> float:
        return float(getattr(self, name))

    def model_per_request(self, b: float) -> float:
        """Model service per request when ``b`` requests share a batch (linear between measured points)."""
        if b <= 1 or not self.batch_time:
            return self.model
        pts = sorted({1: 1.0, **{int(k): v for k, v in self.batch_time.items()}}.items())
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        if b <= xs[-1]:
            ratio = float(np.interp(b, xs, ys))
        else:  # beyond the last point: the last marginal cost per request
            slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2]) if len(xs) > 1 else 1.0
            ratio = ys[-1] + slope * (b - xs[-1])
        return self.model * ratio / b


#: The station of each call under ``fcfs`` (under ``ps`` all calls share one).
STATION = {"put": "loop", "unpack": "loop", "script": "engine", "model": "engine"}


def mva(service: ServiceTimes, clients: int, nodes: int, batch_size: int = 1, discipline: str = "fcfs") -> dict:
    """Mean, p99 and max of each call for ``clients`` clients on ``nodes`` nodes (see the module doc)."""
    if clients < 1 or nodes < 1:
        raise ValueError("clients and nodes must be at least 1")
    if discipline not in ("fcfs", "ps"):
        raise ValueError(f"discipline: fcfs or ps, not {discipline!r}")
    station = STATION if discipline == "fcfs" else dict.fromkeys(CALLS, "node")
    b = 1.0
    for _ in range(100):  # fixed point: the batch size depends on the queue, which depends on it
        stretch = 1 + service.slowdown * (clients - 1)
        s = {c: service.call(c) * stretch for c in CALLS}
        s["model"] = service.model_per_request(b) * stretch
        q = dict.fromkeys(CALLS, 0.0)
        for n in range(1, clients + 1):
            seen = dict(q)  # arrival theorem: the queues of the network with n - 1 clients
            r = {}
            for c in CALLS:
                same = [j for j in CALLS if station[j] == station[c]]
                r[c] = (s[c] + sum(seen[j] * s[j] for j in same) if discipline == "fcfs"
                        else s[c] * (1 + sum(seen[j] for j in same)))
            x = n / (sum(r.values()) + service.think)  # iterations per second, all clients
            q = {c: x * r[c] / nodes for c in CALLS}  # Little, per node
        nb = min(float(max(batch_size, 1)), 1 + seen["model"])
        if abs(nb - b) < 1e-6:
            break
        b = nb
    demand = sum(s.values())
    out = {"clients": clients, "nodes": nodes, "discipline": discipline, "throughput_it_per_s": x,
           "batch": b, "utilization": min(1.0, x * max(sum(s[c] for c in CALLS if station[c] == st)
                                                       for st in set(station.values())) / nodes),
           "calls": {}}
    most = (clients - 1) / nodes  # every other client whose keys sit on this node, all at once
    for c in CALLS:
        same = [j for j in CALLS if station[j] == station[c]]
        ahead = sum(seen[j] for j in same)
        per = sum(seen[j] * s[j] for j in same) / ahead if ahead > 0 else 0.0
        k99 = math.log(0.01) / math.log(ahead / (1 + ahead)) if ahead > 0 else 0.0
        if discipline == "fcfs":
            worst = max(sum(s[j] for j in same), s[c])  # everyone ahead in the same call mix
            call = {"mean": r[c], "p99": s[c] + min(k99, most) * per, "max": s[c] + most * worst}
        else:
            call = {"mean": r[c], "p99": s[c] * (1 + min(k99, most)), "max": s[c] * (1 + most)}
        out["calls"][c] = call
    out["calls"]["iteration"] = {"mean": sum(r.values()) + service.think}
    out["demand"] = demand
    return out


# ------------------------------------------------------------------ fitting and checking

def load_rows(result_dir: Path) -> list[dict]:
    with (result_dir / "records.csv").open() as f:
        return [{**r, "hosts": int(r["hosts"]), "shards": int(r["shards"]), "clients": int(r["clients"]),
                 "iteration": int(r["iteration"]), "rank": int(r["rank"]), "seconds": float(r["seconds"])}
                for r in csv.DictReader(f)]


def fit(rows: list[dict], batch_time: dict[str, dict[int, float]] | None = None) -> dict[str, ServiceTimes]:
    """Per workload: service times from its one-client, one-shard, one-host MPMD Python runs."""
    fitted = {}
    for workload in sorted({r["workload"] for r in rows}):
        sel = [r for r in rows if r["workload"] == workload and r["clients"] == 1 and r["shards"] == 1
               and r["hosts"] == 1 and r["mode"] == "mpmd" and r["client"] == "python"]
        warm = [r for r in sel if r["iteration"] > 0] or sel
        if not warm:
            continue
        med = {c: float(np.mean([r["seconds"] for r in warm if r["call"] == c])) for c in (*CALLS, "iteration")}
        per_iter = defaultdict(float)
        for r in warm:
            per_iter[(r["rank"], r["iteration"])] += r["seconds"] if r["call"] == "iteration" else -r["seconds"]
        think = max(0.0, float(np.mean(list(per_iter.values()))))
        fitted[workload] = ServiceTimes(*(med[c] for c in CALLS), think=think,
                                        batch_time=(batch_time or {}).get(workload, {}))
    return fitted


#: bytes a put sends and an unpack receives, per workload (float32)
PAYLOAD_BYTES = {"resnet": (224 * 224 * 3 * 4, 1000 * 4), "eke": (3000 * 4 * 4, 3000 * 4)}


def payload_fit(fitted: dict[str, ServiceTimes]) -> dict | None:
    """put and unpack service time against payload size, ``a + bytes / bandwidth``, through the
    workloads' two sizes (None unless both workloads were fitted; ``resolved`` False when the
    line through them has a negative intercept or slope, i.e. the noise exceeds the size effect)."""
    if not {"resnet", "eke"} <= set(fitted):
        return None
    out = {}
    for call, k in (("put", 0), ("unpack", 1)):
        (b1, t1), (b2, t2) = sorted((PAYLOAD_BYTES[w][k], fitted[w].call(call)) for w in ("eke", "resnet"))
        per_byte = (t2 - t1) / (b2 - b1)
        fixed = t1 - per_byte * b1
        resolved = per_byte > 0 and fixed >= 0
        out[call] = {"resolved": resolved, "fixed_s": fixed if resolved else None,
                     "mb_per_s": 1e-6 / per_byte if resolved else None, "points": [[b1, t1], [b2, t2]]}
    return out


def model_mean(st: ServiceTimes, clients: int, batch_size: int) -> float:
    """The predicted mean ``run_model`` time on this machine (one node)."""
    return mva(st, clients, 1, batch_size)["calls"]["model"]["mean"]


def fit_slowdown(summaries: list[dict], fitted: dict[str, ServiceTimes], batch_size: int) -> None:
    """Set each workload's ``slowdown`` to the value (0..3) that best fits (least squares of the
    log) the mean ``run_model`` of its multi-client, one-host MPMD Python weak runs; the other
    calls, the throughput and the other modes and hosts stay as a check."""
    for workload, st in fitted.items():
        runs = [s for s in summaries if s.get("ok") and s["workload"] == workload and s["clients"] > 1
                and s["hosts"] == 1 and s["mode"] == "mpmd" and s["client"] == "python" and s["scaling"] == "weak"
                and "model" in s["calls"]]
        if not runs:
            continue
        error = functools.partial(_slowdown_error, st, runs, batch_size)
        coarse = min((round(0.1 * i, 2) for i in range(31)), key=error)  # 0..3 by 0.1, then by 0.01
        st.slowdown = min((round(coarse + 0.01 * i, 2) for i in range(-10, 11) if 0 <= coarse + 0.01 * i <= 3),
                          key=error)


def _slowdown_error(st: ServiceTimes, runs: list[dict], batch_size: int, k: float) -> float:
    """Squared log error of the predicted mean run_model over ``runs`` with ``slowdown = k``."""
    st.slowdown = k
    return sum(math.log(r["calls"]["model"]["mean"] / model_mean(st, r["clients"], batch_size)) ** 2 for r in runs)


def check(summaries: list[dict], fitted: dict[str, ServiceTimes], batch_size: int, nodes_here: int = 1) -> list[dict]:
    """Predicted against measured mean and p99 of each call, for every configuration that ran."""
    table = []
    for s in summaries:
        if not s.get("ok") or s["workload"] not in fitted:
            continue
        clients = s["clients"]
        pred = mva(fitted[s["workload"]], clients, nodes_here, batch_size)
        row = {k: s[k] for k in ("mode", "hosts", "shards", "clients", "scaling", "workload", "client")}
        row["throughput"] = {"measured": s["throughput_it_per_s"], "predicted": pred["throughput_it_per_s"]}
        for c in CALLS:
            m = s["calls"].get(c)
            if m:
                row[c] = {"measured_mean": m["mean"], "predicted_mean": pred["calls"][c]["mean"],
                          "measured_p99": m["p99"], "predicted_p99": pred["calls"][c]["p99"],
                          "ratio_mean": m["mean"] / pred["calls"][c]["mean"]}
        table.append(row)
    return table


# ------------------------------------------------------------------ the paper's configurations

#: Service times per database node assumed for the paper's machine (Cray XC50, one P100 per
#: database node, Aries, RedisAI with 4 GPU threads). No GPU measurement exists in this project
#: yet: these are assumptions, each with its source.
PAPER_ASSUMPTIONS = {
    "independent": {
        "why": "estimates from hardware figures, not fitted to the read-offs",
        "put": 0.35e-3,     # 602 KB into Redis over TCP: ~1.7 GB/s per node for one Redis thread
        "script": 0.6e-3,   # pre_process_3ch: 602 KB host-to-device (~10 GB/s PCIe3) + kernels + RedisAI dispatch
        "model": 1.5e-3,    # ResNet-50 fp32 on a P100 at large batch: ~650 images/s published
        "unpack": 0.05e-3,  # 4 KB reply
        "batch_time": {},   # 'model' above is already per image at large batch
    },
    "calibrated": {
        "why": "per-node service times from the read-off slopes at 1,800 clients on 4 nodes",
        "put": 0.25e-3, "script": 1.0e-3, "model": 0.5e-3, "unpack": 0.05e-3, "batch_time": {},
    },
}
#: SmartSim-Scaling (2023) read-offs, from its plots (about +-15 %): 1,800 clients on 4 nodes.
PUBLISHED = {"clients": 1800, "nodes": 4, "script": 0.47, "model": 0.23, "put": 0.10, "unpack_max": 0.21,
             "slope_ms_per_client_per_node": {"script": 1.0, "model": 0.5, "put": 0.25}}
PAPER_CLIENTS = (960, 1920, 3840, 7680)
PAPER_NODES = (4, 8, 16)


def predict_paper() -> list[dict]:
    """Mean, p99 and max of each call for the paper's grid, under each set of assumptions, with
    the published rule (clients/nodes x slope) beside them."""
    rows = []
    for name, a in PAPER_ASSUMPTIONS.items():
        st = ServiceTimes(a["put"], a["script"], a["model"], a["unpack"], 0.0, a["batch_time"])
        for nodes in PAPER_NODES:
            for clients in (*PAPER_CLIENTS, PUBLISHED["clients"]):
                pred = mva(st, clients, nodes, 10000, "ps")
                rule = {c: clients / nodes * v / 1e3 for c, v in PUBLISHED["slope_ms_per_client_per_node"].items()}
                rows.append({"assumptions": name, "clients": clients, "nodes": nodes,
                             **{c: pred["calls"][c] for c in CALLS}, "published_rule": rule,
                             "throughput_it_per_s": pred["throughput_it_per_s"]})
    return rows


def measure_batch(models: Path, sizes: tuple[int, ...] = (1, 2, 4)) -> dict[str, dict[int, float]]:
    """t(b)/t(1) of each exported model on this machine's CPU (in process, best of 2)."""
    import time

    import torch

    shapes = {"eke": ("eke_resnet.pt", (3000, 4)), "resnet": ("resnet50.pt", (3, 224, 224))}
    out = {}
    for workload, (name, shape) in shapes.items():
        if not (models / name).exists():
            continue
        m = torch.jit.load(str(models / name))
        times = {}
        with torch.no_grad():
            for b in sizes:
                x = torch.rand(b * shape[0], *shape[1:]) if workload == "eke" else torch.rand(b, *shape)
                best = math.inf
                for _ in range(2 if b > 1 else 3):
                    t0 = time.perf_counter()
                    m(x)
                    best = min(best, time.perf_counter() - t0)
                times[b] = best
        out[workload] = {b: times[b] / times[1] for b in sizes}
    return out


def report(result_dir: Path, batch_size: int = 10000, measured_batch: dict | None = None) -> str:
    """Fit, check and predict; write ``model.json`` into ``result_dir``; a text summary."""
    rows = load_rows(result_dir)
    summaries = json.loads((result_dir / "summary.json").read_text())
    if measured_batch is None and (result_dir / "batch_time.json").exists():
        measured_batch = {w: {int(k): v for k, v in d.items()}
                          for w, d in json.loads((result_dir / "batch_time.json").read_text()).items()}
    fitted = fit(rows, measured_batch)
    fit_slowdown(summaries, fitted, batch_size)
    checked = check(summaries, fitted, batch_size)
    paper = predict_paper()
    (result_dir / "model.json").write_text(json.dumps(
        {"fitted": {w: asdict(s) for w, s in fitted.items()}, "payload": payload_fit(fitted),
         "check": checked, "paper": paper,
         "published": PUBLISHED, "assumptions": PAPER_ASSUMPTIONS}, indent=1))
    lines = ["model fit (s): " + "; ".join(f"{w}: " + ", ".join(f"{c} {getattr(s, c):.4f}" for c in (*CALLS, "think"))
                                         + f", slowdown per extra client {s.slowdown:.2f}" for w, s in fitted.items())]
    payload = payload_fit(fitted)
    if payload:
        lines.append("against payload size: " + "; ".join(
            f"{c} {v['fixed_s'] * 1e3:.2f} ms + bytes at {v['mb_per_s']:.0f} MB/s" if v["resolved"]
            else f"{c} not resolved (the two sizes differ by less than the noise)" for c, v in payload.items()))
    lines.append(f"{'configuration':46s} {'call':7s} {'measured':>9s} {'model':>9s} {'ratio':>6s}")
    for r in checked:
        where = (f"{r['mode']} {r['hosts']}h {r['workload']} {r['scaling']} {r['client']} "
                 f"{r['shards']}s x {r['clients']}c")
        for c in CALLS:
            if c in r:
                lines.append(f"{where:46s} {c:7s} {r[c]['measured_mean']:9.4f} {r[c]['predicted_mean']:9.4f} "
                             f"{r[c]['ratio_mean']:6.2f}")
    lines.append("paper's configurations (mean s; published rule clients/nodes x slope in brackets):")
    for r in paper:
        if r["assumptions"] == "calibrated" or r["clients"] == PUBLISHED["clients"]:
            lines.append(f"  {r['assumptions']:11s} {r['clients']:5d} clients {r['nodes']:2d} nodes: " + ", ".join(
                f"{c} {r[c]['mean']:.3f} [{r['published_rule'][c]:.3f}]" for c in ("put", "script", "model"))
                + f", unpack max {r['unpack']['max']:.3f}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("result_dir", type=Path)
    p.add_argument("--measure-batch", type=Path, metavar="MODELS",
                   help="time the exported models in MODELS at batch 1, 2, 4 first (writes batch_time.json)")
    p.add_argument("--batch-size", type=int, default=10000)
    args = p.parse_args()
    if args.measure_batch:
        measured = measure_batch(args.measure_batch)
        (args.result_dir / "batch_time.json").write_text(json.dumps(measured, indent=1))
    print(report(args.result_dir, args.batch_size))


if __name__ == "__main__":
    main()
