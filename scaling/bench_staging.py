"""Staging benchmark: put / get / unpack latency (p50, p99) and bandwidth through the servers, for
several sizes, client counts, shard counts and both modes, against raw MPI measured in the same run.

    .venv/bin/python scaling/bench_staging.py [--quick] [--redis] [--out scaling/results/staging.json]

The baselines are raw mpi4py between two ranks: an N-byte message answered by an 8-byte one
(what a put or get must at least do), and a one-sided ``MPI_Get`` of N bytes from a window made
with ``Win.Allocate`` (lock shared + get + unlock); once within one world (compared with MPMD
mode) and once between two separately launched jobs connected through a port (compared with
connect mode, taking the faster of the two). The ratio column is baseline time / mpistage time
for the same size (1.0 = as fast as raw MPI). Each case prints one row and adds one JSON record.
``--redis`` adds Redis put/get rows (scaling/redis_peer.py), compared with raw MPI in one world.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import run_job, summarize  # noqa: E402

from mpistage.jobs import kill_group  # noqa: E402

SIZES = {"8B": 8, "4KiB": 4 << 10, "48KiB": 48 << 10, "602KiB": 224 * 224 * 3 * 4,
         "4MiB": 4 << 20, "16MiB": 16 << 20}
HERE = Path(__file__).resolve()


def iterations(nbytes: int, quick: bool) -> int:
    n = 2000 if nbytes <= 4096 else 400 if nbytes <= 65536 else 60 if nbytes <= 1 << 20 else 15
    return max(5, n // 4) if quick else n


# ------------------------------------------------------------------ roles (run under mpiexec)

def measure_raw(comm, quick: bool) -> list[dict]:
    """Raw MPI between ranks 0 and 1 of ``comm``; rank 0 measures and returns the records."""
    from mpistage.mpienv import mpi

    MPI = mpi()
    rank = comm.Get_rank()
    ack = np.zeros(8, np.uint8)
    records = []
    win = MPI.Win.Allocate(max(SIZES.values()) if rank == 1 else 0, 1, MPI.INFO_NULL, comm)
    for label, n in SIZES.items():
        buf = np.ones(n, np.uint8)
        k = iterations(n, quick)
        times = np.empty(k)
        comm.Barrier()
        for i in range(k + 3):
            t0 = time.perf_counter()
            if rank == 0:
                comm.Send(buf, 1, 1)
                comm.Recv(ack, 1, 2)
            else:
                comm.Recv(buf, 0, 1)
                comm.Send(ack, 0, 2)
            if i >= 3:
                times[i - 3] = time.perf_counter() - t0
        if rank == 0:
            records.append({"operation": "raw_p2p", "size": label, "bytes": n, **summarize(times, n)})
        for i in range(k + 3):
            t0 = time.perf_counter()
            if rank == 0:
                win.Lock(1, MPI.LOCK_SHARED)
                win.Get(buf, 1, (0, n, MPI.BYTE))
                win.Unlock(1)
            if i >= 3:
                times[i - 3] = time.perf_counter() - t0
        comm.Barrier()
        if rank == 0:
            records.append({"operation": "raw_rma_get", "size": label, "bytes": n, **summarize(times, n)})
    win.Free()
    return records


def role_baseline(args: argparse.Namespace) -> None:
    """Two ranks of one world (the MPMD case)."""
    from mpistage.mpienv import mpi

    records = measure_raw(mpi().COMM_WORLD, args.quick)
    if mpi().COMM_WORLD.Get_rank() == 0:
        Path(args.out).write_text(json.dumps(records))


def role_xjob(args: argparse.Namespace) -> None:
    """One rank of each of two separately launched jobs, connected through a port (the connect
    case): ``--side accept`` opens the port and writes it to ``--port-file``."""
    from mpistage.mpienv import mpi

    MPI = mpi()
    port_file = Path(args.port_file)
    if args.side == "accept":
        port = MPI.Open_port()
        tmp = port_file.with_suffix(".tmp")
        tmp.write_text(port)
        tmp.replace(port_file)  # whole or not at all: the other job polls for it
        inter = MPI.COMM_SELF.Accept(port)
    else:
        while not port_file.exists() or not port_file.read_text():
            time.sleep(0.05)
        inter = MPI.COMM_SELF.Connect(port_file.read_text())
    merged = inter.Merge(args.side == "accept")
    records = measure_raw(merged, args.quick)
    merged.Free()
    inter.Disconnect()  # without it MPI_Finalize waits for the other job for good
    if args.side == "connect":
        Path(args.out).write_text(json.dumps(records))


def role_client(args: argparse.Namespace) -> None:
    import mpistage

    client = mpistage.Client()
    comm = mpistage.app_comm()
    rank = comm.Get_rank()
    records = []
    for label, n in SIZES.items():
        data = np.ones(n, np.uint8)
        out = np.empty_like(data)
        key = f"bench.{rank}.{label}"
        client.put_tensor(key, data)
        k = iterations(n, args.quick)
        for op, call in (("put", lambda k=key, d=data: client.put_tensor(k, d)),
                         ("get", lambda k=key: client.get_tensor(k)),
                         ("unpack", lambda k=key, o=out: client.unpack_tensor(k, o))):
            times = np.empty(k)
            comm.Barrier()
            for i in range(k + 3):
                t0 = time.perf_counter()
                call()
                if i >= 3:
                    times[i - 3] = time.perf_counter() - t0
            all_times = comm.gather(times, root=0)
            if rank == 0:
                records.append({"operation": op, "size": label, "bytes": n,
                                **summarize(np.concatenate(all_times), n)})
                # aggregate throughput: every client moving data at once
                records[-1]["aggregate_mb_per_s"] = round(
                    n * len(all_times) / np.median([t.mean() for t in all_times]) / 1e6, 1)
    if rank == 0:
        Path(args.out).write_text(json.dumps(records))


# ------------------------------------------------------------------ driver

def with_ratio(rec: dict, raw: dict) -> dict:
    """Add the baseline it is compared with, and the ratio of the two p50 times."""
    rec.update(baseline=raw["operation"], baseline_p50_us=raw["p50_us"],
               ratio_to_raw=round(raw["p50_us"] / rec["p50_us"], 3))
    return rec


def cross_job_baseline(py: str, env: dict[str, str], tmp: Path, out: Path, quick: list[str]) -> None:
    """Raw MPI between two separately launched jobs through an ompi-server, as in connect mode."""
    uri, port_file = tmp / "xjob.uri", tmp / "xjob.port"
    ompi = subprocess.Popen(["ompi-server", "--no-daemonize", "--report-uri", str(uri)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        while not uri.exists() or not uri.read_text():
            time.sleep(0.05)
        job = ["mpiexec", "--ompi-server", f"file:{uri}", "-n", "1", py, str(HERE), "--role", "xjob",
               "--port-file", str(port_file), "--out", str(out), *quick]
        acceptor = subprocess.Popen([*job, "--side", "accept"], env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        try:
            run_job([*job, "--side", "connect"], env, timeout=300)  # the connecting side measures
            try:
                acceptor.wait(timeout=60)
            except subprocess.TimeoutExpired:
                print("bench_staging: the accepting job did not exit within 60 s; killed", file=sys.stderr)
        finally:
            kill_group(acceptor)  # a connect side that failed must not leave the acceptor spinning
    finally:
        ompi.terminate()
        ompi.wait(timeout=30)


def redis_records(baseline: dict, quick: bool) -> list[dict]:
    """Redis put/get at the same sizes, compared with raw MPI point-to-point in one world; [] with a
    one-line message when redis-server or redis-py is missing."""
    import redis_peer

    reason = redis_peer.unavailable()
    if reason:
        print(f"bench_staging: skipping Redis: {reason}", flush=True)
        return []
    records = []
    with redis_peer.redis_server() as port:
        for rec in redis_peer.measure(port, SIZES, lambda n: iterations(n, quick)):
            rec.update(mode="redis", shards=1, clients=1, client="python", system="redis")
            records.append(with_ratio(rec, baseline[("raw_p2p", rec["size"])]))
            print_row(rec)
    return records


def drive(args: argparse.Namespace) -> None:
    from mpistage.cli import mpi_environ

    env = mpi_environ()
    py = sys.executable
    mpistage_cli = [py, "-m", "mpistage.cli"]
    quick = ["--quick"] if args.quick else []
    results: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "baseline.json"
        run_job(["mpiexec", "-n", "2", py, str(HERE), "--role", "baseline", "--out", str(base), *quick], env)
        baseline = {(r["operation"], r["size"]): r for r in json.loads(base.read_text())}
        xbase = Path(tmp) / "xjob.json"
        cross_job_baseline(py, env, Path(tmp), xbase, quick)
        xbaseline = {(r["operation"], r["size"]): r for r in json.loads(xbase.read_text())}
        for mode in args.modes:
            for shards in args.shards:
                for clients in args.clients:
                    out = Path(tmp) / f"{mode}-{shards}-{clients}.json"
                    role = [py, str(HERE), "--role", "client", "--out", str(out), *quick]
                    if mode == "mpmd":
                        run_job([*mpistage_cli, "launch", "--servers", str(shards), "-n", str(clients), "--", *role],
                            env)
                    else:
                        run_dir = Path(tmp) / f"run-{shards}-{clients}"
                        run_job([*mpistage_cli, "start", "--shards", str(shards), "--dir", str(run_dir)], env)
                        try:
                            run_job([*mpistage_cli, "run", "--dir", str(run_dir), "-n", str(clients), "--", *role], env)
                        finally:
                            run_job([*mpistage_cli, "stop", "--dir", str(run_dir)], env)
                    for rec in json.loads(out.read_text()):
                        if mode == "mpmd":
                            raw = baseline[("raw_p2p", rec["size"])]
                        else:  # the faster raw path between two jobs
                            raw = min((xbaseline[(op, rec["size"])] for op in ("raw_p2p", "raw_rma_get")),
                                      key=lambda r: r["p50_us"])
                        rec.update(mode=mode, shards=shards, clients=clients, client="python", system="mpistage")
                        results.append(with_ratio(rec, raw))
                        print_row(rec)
        if args.fortran and shutil.which("mpif90"):
            sys.path.insert(0, str(HERE.parent))
            from bench_fortran import fortran_records

            for rec in fortran_records(args.quick):
                results.append(with_ratio(rec, baseline[("raw_p2p", rec["size"])]))
                print_row(rec)
        if args.redis:
            results += redis_records(baseline, args.quick)
    for name, table in (("raw-world", baseline), ("raw-connect", xbaseline)):
        results += [{**rec, "mode": name, "shards": 0, "clients": 1, "system": "raw-mpi"} for rec in table.values()]
        print(f"\nbaseline {name} (one rank each side):")
        for rec in table.values():
            print(f"  {rec['operation']:12s} {rec['size']:>7s} p50 {rec['p50_us']:10.2f} us  "
                  f"{rec['mb_per_s']:9.1f} MB/s")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"\nwrote {len(results)} records to {args.out}")


HEADER = (f"{'client':8s}{'mode':8s}{'shards':>7s}{'clients':>8s}  {'op':7s}{'size':>7s}{'p50 us':>11s}"
          f"{'p99 us':>11s}{'MB/s':>9s}{'raw p50':>10s}{'ratio':>7s}")


def print_row(rec: dict) -> None:
    if not getattr(print_row, "done", False):
        print(HEADER)
        print_row.done = True
    print(f"{rec['client']:8s}{rec['mode']:8s}{rec['shards']:>7d}{rec['clients']:>8d}  "
          f"{rec['operation']:7s}{rec['size']:>7s}"
          f"{rec['p50_us']:>11.2f}{rec['p99_us']:>11.2f}{rec['mb_per_s']:>9.1f}{rec['baseline_p50_us']:>10.2f}"
          f"{rec['ratio_to_raw']:>7.2f}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--role", choices=["driver", "baseline", "xjob", "client"], default="driver")
    p.add_argument("--side", choices=["accept", "connect"], help="xjob role: which job this is")
    p.add_argument("--port-file", help="xjob role: where the accepting job writes its port")
    p.add_argument("--out", default=str(HERE.parent / "results" / "staging.json"))
    p.add_argument("--quick", action="store_true", help="fewer iterations")
    p.add_argument("--modes", nargs="+", default=["mpmd", "connect"])
    p.add_argument("--shards", nargs="+", type=int, default=[1, 2])
    p.add_argument("--clients", nargs="+", type=int, default=[1, 2, 4])
    p.add_argument("--no-fortran", dest="fortran", action="store_false",
                   help="skip the Fortran client (MPMD, 1 shard, 1 client; needs mpif90)")
    p.add_argument("--redis", action="store_true",
                   help="also measure Redis (redis-py, a redis-server started on loopback) at the same sizes")
    args = p.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    {"driver": drive, "baseline": role_baseline, "xjob": role_xjob, "client": role_client}[args.role](args)


if __name__ == "__main__":
    main()
