"""ADIOS2 benchmark: put / get latency (p50, p99) and bandwidth through the ADIOS2 backend (SST
between two processes, BP5 files), next to the same operations with raw ``adios2`` calls and
through the MPI backend (one server, one client, MPMD), in one run, at the staging sizes.

    .venv/bin/python scaling/bench_adios2.py [--quick] [--out scaling/results/adios2.json]

What is timed, per operation and size (so that each compares with an MPI-backend call, which
returns once the servers have the data or the client has it):
- SST put: A publishes a step with N bytes and waits for the peer's 8-byte step in reply;
  SST get: A publishes an 8-byte request and waits for the peer's step of N bytes. The peer
  is a second process using the same implementation (mpistage or raw adios2).
- SST stream: A publishes steps of N bytes back to back (up to QueueLimit in flight), then
  one request, and waits for the answer: the time per step (throughput, not latency).
- BP5 put: one step of N bytes, ``put + flush`` (EndStep); BP5 get: ``get + flush`` of one
  step of the closed file.
Columns: ``raw/this`` = raw adios2's p50 / this p50 (1.0: no overhead); ``mpi/this`` = the MPI
backend's p50 / this p50 (above 1: faster than the MPI backend).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_staging import SIZES, iterations  # noqa: E402
from common import run_job, summarize  # noqa: E402

HERE = Path(__file__).resolve()
LOSSLESS = {"RendezvousReaderCount": "1", "QueueFullPolicy": "Block", "QueueLimit": "4"}
WARMUP = 3
#: SST round trips per case at most: each takes tens of ms here (docs/adios2.md), whatever the size.
SST_ROUND_TRIPS = 40


# ------------------------------------------------------------------ the two implementations

class RawEnd:
    """One engine with raw ``adios2.bindings`` calls: a step per message."""

    def __init__(self, engine: str, path: str, mode: str, params: dict[str, str]) -> None:
        import adios2.bindings as ab

        self.ab = ab
        self.adios = ab.ADIOS()
        self.io = self.adios.DeclareIO(f"raw:{path}")
        self.io.SetEngine(engine)
        self.io.SetParameters({**({"DataTransport": "WAN"} if engine == "SST" else {}), **params})
        self.engine = self.io.Open(path, ab.Mode.Write if mode == "writer" else ab.Mode.Read)

    def send(self, name: str, data: np.ndarray) -> None:
        ab = self.ab
        self.engine.BeginStep()
        var = self.io.InquireVariable(name)
        if not var:
            var = self.io.DefineVariable(name, data, list(data.shape), [0], list(data.shape), False)
        else:
            var.SetShape(list(data.shape))
            var.SetSelection([[0], list(data.shape)])
        self.engine.Put(var, data, ab.Mode.Sync)
        self.engine.EndStep()

    def recv(self) -> tuple[str, np.ndarray]:
        ab = self.ab
        status = self.engine.BeginStep(ab.StepMode.Read, 60.0)
        if status != ab.StepStatus.OK:
            raise RuntimeError(f"begin_step: {status}")
        name = next(iter(self.io.AvailableVariables()))
        var = self.io.InquireVariable(name)
        out = np.empty([int(n) for n in var.Shape()], np.uint8)
        self.engine.Get(var, out, ab.Mode.Sync)
        self.engine.EndStep()
        return name, out

    def close(self) -> None:
        self.engine.Close()


class MpistageEnd:
    """One engine through ``Client(backend=adios2_backend(...))``: put/get, ``flush`` per step."""

    def __init__(self, engine: str, path: str, mode: str, params: dict[str, str]) -> None:
        from mpistage import Client
        from mpistage.backends.adios2_config import adios2_backend

        backend = adios2_backend(engine, path, mode, params=params)
        self.store = backend.store
        self.client = Client(backend=backend)

    def send(self, name: str, data: np.ndarray) -> None:
        self.client.put_tensor(name, data)
        self.client.flush()

    def recv(self) -> tuple[str, np.ndarray]:
        name = next(n for n in NAMES if self.client.tensor_exists(n))
        out = self.client.get_tensor(name)
        self.client.flush()
        return name, out

    def close(self) -> None:
        self.client.shutdown_servers()


IMPLS = {"raw": RawEnd, "mpistage": MpistageEnd}
#: The peer's messages: x (N bytes: answer 8), req (N: answer N bytes), s (streamed: no answer),
#: sync (answer 8 once the streamed steps before it are in), stop.
NAMES = ("x", "req", "s", "sync", "stop")


def timed(k: int, call) -> np.ndarray:
    times = np.empty(k)
    for i in range(k + WARMUP):
        t0 = time.perf_counter()
        call()
        if i >= WARMUP:
            times[i - WARMUP] = time.perf_counter() - t0
    return times


# ------------------------------------------------------------------ SST: driver side and peer

def role_peer(args: argparse.Namespace) -> None:
    """The SST peer: answer ``x`` (N bytes) with 8 bytes, ``req`` (holding N) with N bytes."""
    impl = IMPLS[args.impl]
    inbound = impl("SST", str(Path(args.dir) / "a2b"), "reader", {})
    outbound = impl("SST", str(Path(args.dir) / "b2a"), "writer", LOSSLESS)
    ack = np.zeros(8, np.uint8)
    payloads = {n: np.ones(n, np.uint8) for n in SIZES.values()}
    while True:
        name, data = inbound.recv()
        if name == "stop":
            break
        if name in ("x", "sync"):
            outbound.send("x", ack)
        elif name == "req":
            outbound.send("x", payloads[int(data.view(np.int64)[0])])
    outbound.close()
    inbound.close()


def measure_sst(impl_name: str, quick: bool, tmp: Path) -> list[dict]:
    peer = subprocess.Popen([sys.executable, str(HERE), "--role", "peer", "--impl", impl_name, "--dir", str(tmp)],
                            start_new_session=True)
    records = []
    try:
        impl = IMPLS[impl_name]
        outbound = impl("SST", str(tmp / "a2b"), "writer", LOSSLESS)
        inbound = impl("SST", str(tmp / "b2a"), "reader", {})
        for label, n in SIZES.items():
            data = np.ones(n, np.uint8)
            request = np.array([n], np.int64).view(np.uint8)
            k = min(iterations(n, quick), SST_ROUND_TRIPS // (4 if quick else 1))

            def put(d=data) -> None:
                outbound.send("x", d)
                inbound.recv()

            def get(r=request) -> None:
                outbound.send("req", r)
                inbound.recv()

            for op, call in (("put", put), ("get", get)):
                records.append({"transport": "SST", "impl": impl_name, "operation": op, "size": label,
                                "bytes": n, **summarize(timed(k, call), n)})
                print_row(records[-1])
            steps = max(k, 20)
            t0 = time.perf_counter()
            for _ in range(steps):  # streamed: steps back to back, one answer at the end
                outbound.send("s", data)
            outbound.send("sync", request)
            inbound.recv()
            per_step = (time.perf_counter() - t0) / steps
            records.append({"transport": "SST", "impl": impl_name, "operation": "stream", "size": label,
                            "bytes": n, **summarize(np.array([per_step]), n), "count": steps})
            print_row(records[-1])
        outbound.send("stop", np.zeros(8, np.uint8))
        outbound.close()
        inbound.close()
        peer.wait(timeout=120)
    finally:
        if peer.poll() is None:
            os.killpg(peer.pid, 9)
            peer.wait()
    return records


def measure_bp5(impl_name: str, quick: bool, tmp: Path) -> list[dict]:
    impl = IMPLS[impl_name]
    records = []
    for label, n in SIZES.items():
        data = np.ones(n, np.uint8)
        k = iterations(n, quick)
        path = str(tmp / f"{impl_name}-{label}.bp")
        writer = impl("BP5", path, "writer", {})
        put_times = timed(k, lambda w=writer, d=data: w.send("x", d))
        writer.close()
        reader = impl("BP5", path, "reader", {})
        get_times = timed(k, reader.recv)
        reader.close()
        for op, times in (("put", put_times), ("get", get_times)):
            records.append({"transport": "BP5", "impl": impl_name, "operation": op, "size": label,
                            "bytes": n, **summarize(times, n)})
            print_row(records[-1])
    return records


def measure_mpi(quick: bool, tmp: Path) -> list[dict]:
    """The MPI backend, one server and one client (bench_staging's client role)."""
    from mpistage.cli import mpi_environ

    out = tmp / "mpi.json"
    role = [sys.executable, str(HERE.parent / "bench_staging.py"), "--role", "client", "--out", str(out)]
    run_job([sys.executable, "-m", "mpistage.cli", "launch", "--servers", "1", "-n", "1", "--", *role,
             *(["--quick"] if quick else [])], mpi_environ())
    records = [{"transport": "MPI", "impl": "mpistage", **r} for r in json.loads(out.read_text())
               if r["operation"] in ("put", "get")]
    for rec in records:
        print_row(rec)
    return records


# ------------------------------------------------------------------ table

HEADER = f"{'transport':10s}{'impl':10s}{'op':5s}{'size':>8s}{'p50 us':>12s}{'p99 us':>12s}{'MB/s':>9s}"


def print_row(rec: dict) -> None:
    if not getattr(print_row, "done", False):
        print(HEADER, flush=True)
        print_row.done = True  # type: ignore[attr-defined]
    print(f"{rec['transport']:10s}{rec['impl']:10s}{rec['operation']:5s}{rec['size']:>8s}"
          f"{rec['p50_us']:12.1f}{rec['p99_us']:12.1f}{rec['mb_per_s']:9.1f}", flush=True)


def with_ratios(records: list[dict]) -> None:
    """Add ``raw_over_this`` and ``mpi_over_this`` (p50 ratios) to the mpistage ADIOS2 records."""
    index = {(r["transport"], r["impl"], r["operation"], r["size"]): r for r in records}
    for r in records:
        if r["transport"] in ("SST", "BP5") and r["impl"] == "mpistage":
            raw = index.get((r["transport"], "raw", r["operation"], r["size"]))
            mpi = index.get(("MPI", "mpistage", r["operation"], r["size"]))
            r["raw_over_this"] = round(raw["p50_us"] / r["p50_us"], 3) if raw else None
            r["mpi_over_this"] = round(mpi["p50_us"] / r["p50_us"], 3) if mpi else None


def print_table(records: list[dict]) -> None:
    print("\n| transport | op | size | adios2 backend p50 µs | MB/s | raw adios2 p50 µs | raw/this "
          "| MPI backend p50 µs | mpi/this |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    index = {(r["transport"], r["impl"], r["operation"], r["size"]): r for r in records}
    for r in records:
        if r["transport"] in ("SST", "BP5") and r["impl"] == "mpistage":
            raw = index.get((r["transport"], "raw", r["operation"], r["size"]), {})
            mpi = index.get(("MPI", "mpistage", r["operation"], r["size"]), {})
            print(f"| {r['transport']} | {r['operation']} | {r['size']} | {r['p50_us']:.1f} | {r['mb_per_s']:.1f} "
                  f"| {raw.get('p50_us', float('nan')):.1f} | {r['raw_over_this']} "
                  f"| {mpi.get('p50_us', float('nan')):.1f} | {r['mpi_over_this']} |")


def drive(args: argparse.Namespace) -> None:
    records: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for impl in ("raw", "mpistage"):
            for transport in args.transports:
                where = Path(tmp) / f"{transport}-{impl}"
                where.mkdir()
                measure = measure_sst if transport == "SST" else measure_bp5
                records += measure(impl, args.quick, where)
        if not args.no_mpi:
            records += measure_mpi(args.quick, Path(tmp))
    with_ratios(records)
    print_table(records)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(records, indent=1))
    print(f"\nwrote {len(records)} records to {args.out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--role", choices=["driver", "peer"], default="driver")
    p.add_argument("--impl", choices=sorted(IMPLS), help="peer role: which implementation")
    p.add_argument("--dir", help="peer role: where the SST streams are named")
    p.add_argument("--out", default=str(HERE.parent / "results" / "adios2.json"))
    p.add_argument("--quick", action="store_true", help="fewer iterations")
    p.add_argument("--transports", nargs="+", choices=["SST", "BP5"], default=["SST", "BP5"])
    p.add_argument("--no-mpi", action="store_true", help="skip the MPI backend")
    args = p.parse_args()
    if args.role == "peer":
        role_peer(args)
    else:
        drive(args)


if __name__ == "__main__":
    main()
