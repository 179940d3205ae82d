"""Many producers, one trainer: N producer ranks put snapshots at a fixed rate while one consumer
rank reads them all (and takes a training step on each), first through mpistage, then through
HDF5 files (h5py, local disk) in the same run; sustained throughput and the consumer's lag.

    .venv/bin/python scaling/producers.py --producers 4 --rate 20 --seconds 4 --out producers.json

One MPMD job: ``mpistage launch --servers S -n N+1`` of this file (``--role job``): application
ranks 0..N-1 produce, rank N consumes. Each producer makes ``rate x seconds`` snapshots of
``--kib`` KiB (float32; element 0 holds the wall time it was made at), one every ``1/rate`` s (a
late producer does not skip: it catches up). Through mpistage a snapshot is ``put_tensor``
``snap.<p>.<k>``; the consumer polls each producer's next key (``tensor_exists``), gets it and
deletes it. Through files it is ``<dir>/snap.<p>.<k>.h5`` written to a temporary name and
renamed (whole or not at all); the consumer polls for the next file, reads it and removes it.
Lag = time read - time made. The training step is a least-squares gradient step on the snapshot
(numpy), the same in both phases.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]


# ------------------------------------------------------------------ the two exchanges

class StoreExchange:
    """Snapshots through the mpistage servers."""

    name = "mpistage"

    def __init__(self, client) -> None:
        self.client = client

    def put(self, p: int, k: int, data: np.ndarray) -> None:
        self.client.put_tensor(f"snap.{p}.{k}", data)

    def take(self, p: int, k: int) -> np.ndarray | None:
        key = f"snap.{p}.{k}"
        if not self.client.tensor_exists(key):
            return None
        data = self.client.get_tensor(key)
        self.client.delete_tensor(key)
        return data


class FileExchange:
    """Snapshots through HDF5 files in one directory (renamed into place when complete)."""

    name = "h5py"

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def put(self, p: int, k: int, data: np.ndarray) -> None:
        import h5py

        tmp = self.dir / f".snap.{p}.{k}.h5.tmp"
        with h5py.File(tmp, "w") as f:
            f.create_dataset("snapshot", data=data)
        os.replace(tmp, self.dir / f"snap.{p}.{k}.h5")

    def take(self, p: int, k: int) -> np.ndarray | None:
        import h5py

        path = self.dir / f"snap.{p}.{k}.h5"
        if not path.exists():
            return None
        with h5py.File(path, "r") as f:
            data = f["snapshot"][()]
        path.unlink()
        return data


# ------------------------------------------------------------------ roles

def produce(exchange, p: int, count: int, rate: float, nbytes: int) -> dict:
    """Put ``count`` snapshots at ``rate`` per second; how long the puts took and how late it ran."""
    data = np.random.default_rng(p).random(nbytes // 4, dtype=np.float32)
    start = time.time()
    put_times, late = [], 0.0
    for k in range(count):
        due = start + k / rate
        wait = due - time.time()
        if wait > 0:
            time.sleep(wait)
        else:
            late = max(late, -wait)
        data[:2] = np.frombuffer(  # the stamp: a float64 in the first two elements
            np.float64(time.time()).tobytes(), np.float32)
        t0 = time.perf_counter()
        exchange.put(p, k, data)
        put_times.append(time.perf_counter() - t0)
    return {"put_p50_s": float(np.median(put_times)), "put_max_s": float(np.max(put_times)),
            "seconds": time.time() - start, "most_late_s": late}


def train_step(w: np.ndarray, snapshot: np.ndarray, lr: float = 1e-3) -> np.ndarray:
    """One least-squares gradient step: fit the snapshot's odd elements from its even ones."""
    x, y = snapshot[2::2][: w.size * 64].reshape(-1, w.size), snapshot[3::2][: w.size * 64].reshape(-1, w.size)
    return w - lr * (x * (x * w - y)).mean(axis=0)


def consume(exchange, producers: int, count: int, timeout: float) -> dict:
    """Read every producer's ``count`` snapshots in order of arrival; lag and throughput."""
    nxt = [0] * producers
    lags, nbytes = [], 0
    w = np.zeros(16, np.float32)
    start = time.time()
    while min(nxt) < count:
        got = False
        for p in range(producers):
            if nxt[p] >= count:
                continue
            data = exchange.take(p, nxt[p])
            if data is None:
                continue
            now = time.time()
            lags.append(now - float(np.frombuffer(data[:2].tobytes(), np.float64)[0]))
            nbytes += data.nbytes
            w = train_step(w, data)
            nxt[p] += 1
            got = True
        if not got:
            if time.time() - start > timeout:
                raise SystemExit(f"producers: consumer timed out with {nxt} of {count} each")
            time.sleep(0.001)
    end = time.time()
    lag = np.array(lags)
    span = max(end - start, 1e-9)  # sustained: over the whole phase, the drain included
    return {"snapshots": len(lags), "mb": nbytes / 1e6, "seconds": end - start,
            "throughput_snap_per_s": len(lags) / span, "throughput_mb_per_s": nbytes / 1e6 / span,
            "lag_p50_s": float(np.median(lag)), "lag_p99_s": float(np.percentile(lag, 99)),
            "lag_max_s": float(lag.max()), "trained_weight_norm": float(np.linalg.norm(w))}


def role_job(args: argparse.Namespace) -> None:
    """Inside the MPMD job: both phases, producers and consumer."""
    import mpistage

    client = mpistage.Client(logger_name="producers")
    comm = mpistage.app_comm()
    rank, size = comm.Get_rank(), comm.Get_size()
    producers = size - 1
    if producers < 1:
        raise SystemExit("producers: the job needs at least 2 application ranks (producers + consumer)")
    count = max(1, round(args.rate * args.seconds))
    directory = Path(args.dir)
    results = {}
    for exchange in (StoreExchange(client), FileExchange(directory)):
        comm.Barrier()
        if rank < producers:
            mine = produce(exchange, rank, count, args.rate, args.kib * 1024)
            consumed = None
        else:
            mine, consumed = None, consume(exchange, producers, count, args.timeout)
        prod = comm.gather(mine, root=producers)
        if rank == producers:
            results[exchange.name] = {
                **consumed, "offered_snap_per_s": producers * args.rate,
                "producer_put_p50_s": float(np.median([r["put_p50_s"] for r in prod if r])),
                "producer_put_max_s": float(max(r["put_max_s"] for r in prod if r)),
                "producer_most_late_s": float(max(r["most_late_s"] for r in prod if r))}
    if rank == producers:
        Path(args.out).write_text(json.dumps({"producers": producers, "rate_hz": args.rate, "kib": args.kib,
                                              "count_each": count, "results": results}, indent=1))


# ------------------------------------------------------------------ driver

def run(producers: int, rate: float, seconds: float, kib: int, out: Path, shards: int = 1,
        timeout: float = 300) -> dict:
    """Run the job (``producers`` + 1 ranks, ``shards`` server ranks); its results."""
    from mpistage.jobs import JobTimeout, run_bounded

    files = Path(tempfile.mkdtemp(prefix="mpistage-producers-"))  # local disk: /tmp
    try:
        cmd = [sys.executable, "-m", "mpistage.cli", "launch", "--servers", str(shards), "-n", str(producers + 1),
               "--", sys.executable, str(Path(__file__).resolve()), "--role", "job", "--rate", str(rate),
               "--seconds", str(seconds), "--kib", str(kib), "--dir", str(files), "--out", str(out),
               "--timeout", str(timeout)]
        try:
            result = run_bounded(cmd, timeout + 60)
        except JobTimeout as exc:
            raise SystemExit(f"producers: timed out\n{exc.output[-2000:]}") from None
        if result.returncode:
            raise SystemExit(f"producers: exit {result.returncode}\n{result.stdout[-2000:]}")
    finally:
        shutil.rmtree(files, ignore_errors=True)
    return json.loads(out.read_text())


def table(res: dict) -> str:
    """The results as a small text table."""
    lines = [f"{res['producers']} producers x {res['rate_hz']} Hz x {res['kib']} KiB, one consumer:",
             f"{'exchange':10s}{'snap/s':>9s}{'MB/s':>8s}{'offered':>9s}{'lag p50':>10s}{'lag p99':>10s}"
             f"{'lag max':>10s}{'put p50':>10s}"]
    for name, r in res["results"].items():
        lines.append(f"{name:10s}{r['throughput_snap_per_s']:9.1f}{r['throughput_mb_per_s']:8.1f}"
                     f"{r['offered_snap_per_s']:9.1f}{r['lag_p50_s'] * 1e3:8.1f}ms{r['lag_p99_s'] * 1e3:8.1f}ms"
                     f"{r['lag_max_s'] * 1e3:8.1f}ms{r['producer_put_p50_s'] * 1e3:8.2f}ms")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--role", choices=["driver", "job"], default="driver")
    p.add_argument("--producers", type=int, default=4)
    p.add_argument("--rate", type=float, default=20.0, help="snapshots per second per producer")
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--kib", type=int, default=256, help="snapshot size (at least 16)")
    p.add_argument("--shards", type=int, default=1)
    p.add_argument("--dir", help="job role: the directory for the files")
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--out", type=Path, default=HERE / "results" / "producers.json")
    args = p.parse_args()
    if args.role == "job":
        role_job(args)
        return
    if args.producers < 1 or args.rate <= 0 or args.seconds <= 0 or args.kib < 16:
        p.error("--producers, --rate and --seconds must be positive, --kib at least 16")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    print(table(run(args.producers, args.rate, args.seconds, args.kib, args.out, args.shards, args.timeout)))


if __name__ == "__main__":
    main()
