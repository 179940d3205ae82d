"""Inference benchmark: models served by mpistage in three formats (TorchScript, torch.export,
ONNX) against the same format called in-process, in the same run.

    .venv/bin/python scaling/bench_inference.py [--quick] [--out scaling/results/inference.json]

One MPMD job: one server rank (``--threads`` = the cores here) and 4 client ranks. Rank 0 builds
each model in each format (``inference.torchscript_bytes`` / ``program_bytes`` / ``onnx_bytes``)
and sets it (backend TORCH, TORCH, ONNX; ``batch_size`` = 4 requests' rows, so the requests of 4
clients may share a pass). For each model, request size, format and client count k (1, 4), k
clients loop concurrently: run the model on their input (put once before), get the output.

* EKEResNet: 3,000 and 12,000 points (4 features) per request.
* ResNet-50: 1 and 4 images per request, (n, 3, 224, 224) float32, already normalized (the model
  only: the script is TorchScript, which the formats are compared against).

Served throughput = inferences (points or images) of all k clients / wall time. The baseline is
rank 0 calling the same bytes in-process, loaded the same way (``torch.jit.load``,
``torch.export.load(...).module()``, an ``onnxruntime.InferenceSession`` with the same threads),
once per request ("ratio", served / in-process: what serving costs), and on k requests' rows in one
call ("r-batch"). Load times: the export on rank 0, ``set_model`` as the client sees it (send,
load on the server, reply), and the in-process load from the same bytes. Each timing is the best
of ``REPEATS`` (the machine may be shared). Prints a table, writes JSON.
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
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
CLIENTS = (1, 4)
FORMATS = ("TorchScript", "torch.export", "ONNX")
BACKEND = {"TorchScript": "TORCH", "torch.export": "TORCH", "ONNX": "ONNX"}
REPEATS = 2  # each timing is the best of this many runs of `iters` calls
JIT_DEPRECATION = r"`torch\.jit\.\w+` is deprecated"


def cases(quick: bool) -> list[dict]:
    scale = 1 if quick else 2
    return [
        {"model": "EKEResNet", "rows": [3000, 12000], "iters": {3000: 3 * scale, 12000: scale}},
        {"model": "ResNet-50", "rows": [1, 4], "iters": {1: 2 * scale, 4: scale}},
    ]


# ------------------------------------------------------------------ the MPMD job (client ranks)

def quiet_barrier(comm) -> None:
    """A barrier that sleeps while it waits (only nonblocking barriers on this communicator)."""
    req = comm.Ibarrier()
    while not req.Test():
        time.sleep(0.0005)


def build(name: str) -> tuple[object, dict[str, bytes], dict[str, float]]:
    """The eager model, its bytes in each format, and each export's seconds."""
    import torch

    from inference import EKEResNet, fuse_batchnorm, onnx_bytes, program_bytes, resnet50, torchscript_bytes

    torch.manual_seed(0)
    model = fuse_batchnorm(EKEResNet()) if name == "EKEResNet" else resnet50(seed=0)
    model.eval()
    example = torch.zeros(8, 4) if name == "EKEResNet" else torch.zeros(2, 3, 224, 224)
    blobs, export_s = {}, {}
    for fmt, make in (("TorchScript", lambda: torchscript_bytes(model)),
                      ("torch.export", lambda: program_bytes(model, example)),
                      ("ONNX", lambda: onnx_bytes(model, example))):
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=JIT_DEPRECATION, category=DeprecationWarning)
            blobs[fmt] = make()
        export_s[fmt] = time.perf_counter() - t0
    return model, blobs, export_s


def make_input(name: str, rows: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if name == "EKEResNet":
        return rng.standard_normal((rows, 4)).astype(np.float32)
    return rng.standard_normal((rows, 3, 224, 224)).astype(np.float32)


def load_in_process(fmt: str, blob: bytes, threads: int):
    """A callable numpy -> numpy of ``blob``, loaded as the server loads it."""
    import torch

    if fmt == "ONNX":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        session = ort.InferenceSession(blob, so, providers=["CPUExecutionProvider"])
        feed = session.get_inputs()[0].name
        return lambda x: session.run(None, {feed: x})[0]
    if fmt == "TorchScript":
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=JIT_DEPRECATION, category=DeprecationWarning)
            module = torch.jit.load(io.BytesIO(blob))
    else:
        module = torch.export.load(io.BytesIO(blob)).module()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(x)).numpy()
    return run


def rate(fn, batches: list[np.ndarray], iters: int) -> float:
    """Inferences per second of calling ``fn`` on each batch in turn, best of REPEATS."""
    fn(batches[0])
    best = float("inf")
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        for _ in range(iters):
            for b in batches:
                fn(b)
        best = min(best, time.perf_counter() - t0)
    return sum(len(b) for b in batches) * iters / best


def role_clients(args: argparse.Namespace) -> None:
    import torch

    import mpistage

    torch.set_num_threads(args.threads)
    c = mpistage.Client()
    comm = mpistage.app_comm()
    rank = comm.Get_rank()
    records = []
    for case in cases(args.quick):
        name = case["model"]
        eager, blobs, export_s = build(name) if rank == 0 else (None, {}, {})
        for rows in case["rows"]:
            iters = case["iters"][rows]
            x = make_input(name, rows, rank)
            c.put_tensor(f"{{b}}.in.{rank}", x)
            for fmt in FORMATS:
                key = f"{name}.{fmt}"
                if rank == 0:
                    t0 = time.perf_counter()
                    c.set_model(key, blobs[fmt], backend=BACKEND[fmt], batch_size=4 * rows)
                    set_s = time.perf_counter() - t0
                    t0 = time.perf_counter()
                    fn = load_in_process(fmt, blobs[fmt], args.threads)
                    load_s = time.perf_counter() - t0
                    got = fn(x)
                    with torch.inference_mode():
                        want = eager(torch.from_numpy(x)).numpy()
                    max_diff = float(np.abs(got - want).max())
                    inputs = [make_input(name, rows, r) for r in range(max(CLIENTS))]
                    each = rate(fn, inputs[:1], iters)
                for k in CLIENTS:
                    if rank == 0:
                        same = rate(fn, [np.concatenate(inputs[:k])], iters) if k > 1 else each
                        before = c.get_server_info()[0]["engine"]["models"][key]
                    quiet_barrier(comm)
                    if rank < k:
                        call(c, key, rank)  # warm-up, untimed
                    served_s = None
                    for _ in range(REPEATS):
                        quiet_barrier(comm)
                        t0 = time.perf_counter()
                        if rank < k:
                            for _ in range(iters):
                                call(c, key, rank)
                        quiet_barrier(comm)
                        elapsed = time.perf_counter() - t0
                        served_s = elapsed if served_s is None else min(served_s, elapsed)
                    if rank == 0:
                        after = c.get_server_info()[0]["engine"]["models"][key]
                        n = k * iters * rows
                        reqs, batches = after["requests"] - before["requests"], after["batches"] - before["batches"]
                        rec = {"model": name, "rows": rows, "format": fmt, "clients": k, "iterations": iters,
                               "served_per_s": round(n / served_s, 2), "in_process_per_s": round(each, 2),
                               "in_process_same_batch_per_s": round(same, 2),
                               "ratio": round(n / served_s / each, 3),
                               "ratio_same_batch": round(n / served_s / same, 3),
                               "mean_requests_per_batch": round(reqs / batches, 2) if batches else 0.0,
                               "call_ms": round(1e3 * served_s / iters, 2), "export_s": round(export_s[fmt], 2),
                               "set_model_s": round(set_s, 3), "in_process_load_s": round(load_s, 3),
                               "bytes": len(blobs[fmt]), "max_abs_diff_vs_eager": max_diff,
                               "batching": after["batching"]}
                        records.append(rec)
                        print(row(rec), flush=True)
                if rank == 0:
                    c.delete_model(key)
    if rank == 0:
        Path(args.records).write_text(json.dumps(records))


def call(c, key: str, rank: int) -> None:
    """One request: run the model on this rank's input, get the output."""
    c.run_model(key, f"{{b}}.in.{rank}", f"{{b}}.out.{rank}")
    c.get_tensor(f"{{b}}.out.{rank}")


def row(r: dict) -> str:
    return (f"{r['model']:<10} {r['rows']:>6} {r['format']:<12} {r['clients']:>3} {r['served_per_s']:>11.1f} "
            f"{r['in_process_per_s']:>11.1f} {r['ratio']:>6.2f} {r['ratio_same_batch']:>7.2f} "
            f"{r['mean_requests_per_batch']:>9.2f} {r['call_ms']:>9.1f} {r['export_s']:>8.1f} "
            f"{r['set_model_s']:>7.2f} {r['in_process_load_s']:>7.2f}")


HEADER = (f"{'model':<10} {'rows':>6} {'format':<12} {'k':>3} {'served/s':>11} {'inproc/s':>11} {'ratio':>6} "
          f"{'r-batch':>7} {'req/batch':>9} {'call_ms':>9} {'export_s':>8} {'set_s':>7} {'load_s':>7}")


# ------------------------------------------------------------------ driver

def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer iterations")
    p.add_argument("--out", type=Path, default=HERE.parent / "results" / "inference.json")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="intra-op threads of the server rank and of the in-process baseline")
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
    subprocess.run(cmd, check=True, cwd=ROOT, timeout=3000)
    records = json.loads(records_file.read_text())
    records_file.unlink()
    import onnxruntime
    import torch

    result = {"benchmark": "inference", "quick": args.quick, "threads": args.threads,
              "cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
              "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "servers": 1,
              "wall_s": round(time.perf_counter() - start, 1),
              "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
              "records": records}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\ntotal {result['wall_s']} s; load average {result['load_average_before_after']}; wrote {args.out}")


if __name__ == "__main__":
    main()
