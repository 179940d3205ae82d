"""Inference benchmark: throughput of models served by mpistage against the same TorchScript model
called in-process, in the same run.

    .venv/bin/python scaling/bench_inference.py [--quick] [--out scaling/results/inference.json]

One MPMD job: one server rank (``--threads`` = the cores here) and 4 client ranks. For each model,
client count k (1, 2, 4) and ``batch_size`` setting, k clients loop concurrently over the paper's
call sequence (Listing 1 of Partee et al.): put the input, run (script and) model, get the output.

* EKEResNet: 3,000 points (4 features) per request; model only.
* ResNet-50: one 224x224x3 float32 image per request; ``pre_process_3ch`` script, then the model.

Served throughput = inferences (points or images) of all k clients / wall time. The baseline is rank
0 calling the same TorchScript bytes (``get_model``) in-process on the same total batch (k requests'
rows in one call), with the same thread count, while the other ranks are idle. The ratio column is
served / in-process. Every timing is the best of 3 repeats (this machine may be shared).
Because a bigger batch is not always faster per row on a CPU (EKEResNet's
activations leave the cache), the table also shows rank 0 calling the model once per request
("inproc-each") and "r-best", the ratio against the faster of the two baselines. Clients that
are not in a phase wait on a sleeping ``Ibarrier`` so they leave the cores to the server. Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
CLIENTS = (1, 2, 4)
EKE_POINTS = 3000
TARGET = 0.8  # served / in-process for EKEResNet at 4 clients
REPEATS = 3  # each timing is the best of this many runs of `iters` calls


def cases(quick: bool) -> list[dict]:
    eke_iters, resnet_iters = (4, 1) if quick else (10, 2)
    return [
        {"model": "EKEResNet", "rows": EKE_POINTS, "iters": eke_iters,
         "batch_sizes": [0, 2 * EKE_POINTS, 4 * EKE_POINTS]},
        {"model": "ResNet-50", "rows": 1, "iters": resnet_iters, "batch_sizes": [0, 4]},
    ]


# ------------------------------------------------------------------ the MPMD job (client ranks)

def quiet_barrier(comm) -> None:
    """A barrier that sleeps while it waits (only nonblocking barriers on this communicator)."""
    req = comm.Ibarrier()
    while not req.Test():
        time.sleep(0.0005)


def make_model(name: str) -> bytes:
    import torch

    from inference import EKEResNet, fuse_batchnorm, resnet50, torchscript_bytes

    if name == "EKEResNet":
        torch.manual_seed(0)
        return torchscript_bytes(fuse_batchnorm(EKEResNet()))
    return torchscript_bytes(resnet50(seed=0))


def make_input(name: str, rows: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if name == "EKEResNet":
        return rng.standard_normal((rows, 4)).astype(np.float32)
    return rng.random((224, 224, 3), dtype=np.float32)  # one image (H, W, C), as in Listing 1


def role_clients(args: argparse.Namespace) -> None:
    import torch

    import mpistage
    from inference import PRE_PROCESS_3CH_SCRIPT

    torch.set_num_threads(args.threads)
    c = mpistage.Client()
    comm = mpistage.app_comm()
    rank = comm.Get_rank()
    records = []
    if rank == 0:
        c.set_script("pre", PRE_PROCESS_3CH_SCRIPT)
    for case in cases(args.quick):
        name, rows, iters = case["model"], case["rows"], case["iters"]
        blob = make_model(name) if rank == 0 else b""
        x = make_input(name, rows, rank)
        c.put_tensor(f"{{b}}.in.{rank}", x)
        for k in CLIENTS:
            if k > comm.Get_size():
                continue
            inproc = in_process(c, comm, name, blob, k, rows, iters, args.threads) if rank == 0 else None
            for bs in case["batch_sizes"]:
                if rank == 0:
                    c.set_model(name, blob, batch_size=bs)
                    before = engine_stats(c, name)
                quiet_barrier(comm)
                served_s = None
                if rank < k:
                    for _ in range(2):  # warm-up, untimed
                        call(c, name, rank)
                for _ in range(REPEATS):  # the best of a few: other work on the machine only slows
                    quiet_barrier(comm)
                    t0 = time.perf_counter()
                    if rank < k:
                        for _ in range(iters):
                            call(c, name, rank)
                    quiet_barrier(comm)
                    elapsed = time.perf_counter() - t0
                    served_s = elapsed if served_s is None else min(served_s, elapsed)
                if rank == 0:
                    after = engine_stats(c, name)
                    n = k * iters * rows
                    batches = after["batches"] - before["batches"]
                    reqs = after["requests"] - before["requests"]
                    rec = {"model": name, "clients": k, "batch_size": bs, "rows_per_request": rows,
                           "iterations_per_client": iters, "repeats": REPEATS,
                           "inferences": n,
                           "served_s": round(served_s, 4), "served_per_s": round(n / served_s, 1),
                           "in_process_per_s": round(inproc["same_batch"], 1),
                           "in_process_per_request_per_s": round(inproc["per_request"], 1),
                           "ratio": round(n / served_s / inproc["same_batch"], 3),
                           "ratio_vs_best": round(n / served_s / max(inproc.values()), 3),
                           "requests_incl_warmup": reqs, "batches_incl_warmup": batches,
                           "mean_requests_per_batch": round(reqs / batches, 2) if batches else 0.0,
                           "call_ms": round(1e3 * served_s / iters, 2)}
                    records.append(rec)
                    print(row(rec), flush=True)
        if rank == 0:
            c.delete_model(name)
    if rank == 0:
        Path(args.records).write_text(json.dumps(records))


def call(c, name: str, rank: int) -> None:
    """One request, as the paper's clients make it: put, (script,) model, get."""
    if name == "EKEResNet":
        c.run_model(name, f"{{b}}.in.{rank}", f"{{b}}.out.{rank}")
    else:
        c.run_script("pre", "pre_process_3ch", f"{{b}}.in.{rank}", f"{{b}}.pre.{rank}")
        c.run_model(name, f"{{b}}.pre.{rank}", f"{{b}}.out.{rank}")
    c.get_tensor(f"{{b}}.out.{rank}")


def in_process(c, comm, name: str, blob: bytes, k: int, rows: int, iters: int, threads: int) -> dict:
    """Inferences/s of the same TorchScript bytes called here: on k requests' rows in one call
    ("same_batch"), and on each request's rows in turn ("per_request")."""
    import torch

    from inference import PRE_PROCESS_3CH_SCRIPT

    model = torch.jit.load(io.BytesIO(blob))
    pre = torch.jit.CompilationUnit(PRE_PROCESS_3CH_SCRIPT).find_function("pre_process_3ch")
    if name == "EKEResNet":
        x = torch.from_numpy(np.concatenate([make_input(name, rows, r) for r in range(k)]))
    else:
        x = torch.from_numpy(np.stack([make_input(name, rows, r) for r in range(k)]))

    def once(batch: torch.Tensor) -> None:
        with torch.inference_mode():
            model(batch if name == "EKEResNet" else pre(batch))

    def rate(batches: list[torch.Tensor]) -> float:
        for b in batches * 2:
            once(b)
        best = float("inf")
        for _ in range(REPEATS):
            t0 = time.perf_counter()
            for _ in range(iters):
                for b in batches:
                    once(b)
            best = min(best, time.perf_counter() - t0)
        return k * rows * iters / best

    step = rows if name == "EKEResNet" else 1
    return {"same_batch": rate([x]), "per_request": rate([x[i * step:(i + 1) * step] for i in range(k)])}


def engine_stats(c, name: str) -> dict:
    return c.get_server_info()[0]["engine"]["models"][name]


def row(r: dict) -> str:
    return (f"{r['model']:<10} {r['clients']:>7} {r['batch_size']:>10} {r['served_per_s']:>12.1f} "
            f"{r['in_process_per_s']:>14.1f} {r['in_process_per_request_per_s']:>14.1f} {r['ratio']:>6.2f} "
            f"{r['ratio_vs_best']:>6.2f} {r['mean_requests_per_batch']:>9.2f} "
            f"{r['call_ms']:>9.1f}")


HEADER = (f"{'model':<10} {'clients':>7} {'batch_size':>10} {'served/s':>12} {'inproc-same/s':>14} "
          f"{'inproc-each/s':>14} {'ratio':>6} {'r-best':>6} {'req/batch':>9} {'call_ms':>9}")


# ------------------------------------------------------------------ driver

def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer iterations")
    p.add_argument("--out", type=Path, default=HERE.parent / "results" / "inference.json")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="torch intra-op threads of the server rank and of the in-process baseline")
    p.add_argument("--role", default="driver", help=argparse.SUPPRESS)
    p.add_argument("--records", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.role == "clients":
        role_clients(args)
        return
    records_file = args.out.with_suffix(".records.tmp")
    cmd = [sys.executable, "-m", "mpistage.cli", "launch", "--servers", "1", "-n", str(max(CLIENTS)),
           "--server-args", f"--threads {args.threads}", "--", sys.executable, str(HERE),
           "--role", "clients", "--records", str(records_file), "--threads", str(args.threads)]
    if args.quick:
        cmd.append("--quick")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    print(HEADER, flush=True)
    start, load_before = time.perf_counter(), os.getloadavg()
    subprocess.run(cmd, check=True, cwd=ROOT, timeout=900)
    records = json.loads(records_file.read_text())
    records_file.unlink()
    import torch

    eke4 = [r for r in records if r["model"] == "EKEResNet" and r["clients"] == 4]
    best = max(eke4, key=lambda r: r["ratio_vs_best"]) if eke4 else None
    summary = {
        "target": f"served >= {TARGET} x in-process for EKEResNet at 4 clients (against the faster "
                  "of the two in-process baselines)",
        "best_eke_4_clients": best,
        "met": bool(best and best["ratio"] >= TARGET),
    }
    result = {"benchmark": "inference", "quick": args.quick, "threads": args.threads,
              "cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
              "torch": torch.__version__, "servers": 1, "wall_s": round(time.perf_counter() - start, 1),
              "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
              "summary": summary, "records": records}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    if best:
        print(f"\nEKEResNet, 4 clients: best ratio {best['ratio_vs_best']:.2f} (vs the faster in-process "
              f"baseline; {best['ratio']:.2f} vs the same total batch) at batch_size {best['batch_size']} "
              f"(target {TARGET}: {'met' if summary['met'] else 'NOT met'}); "
              f"total {result['wall_s']} s; wrote {args.out}")


if __name__ == "__main__":
    main()
