"""Standalone prototype of a window-resident store (issue #15 point 1), measured against raw
one-sided MPI in the same run, between two separately launched jobs connected through a port
(as ``bench_staging.py --modes connect`` does for its cross-job baseline).

    .venv/bin/python scaling/proto_window_store.py [--quick] [--out-dir scaling/results/<date>-window-proto]

The serving job owns an *arena* (one numpy buffer) exposed through a window; a tiny first-fit
extent allocator hands out extents. Operations timed on the client (rank 0 of the merged comm):

- ``raw_rma_put`` / ``raw_rma_get``: lock + Put/Get of N bytes + unlock (the ceiling);
- ``proto_put``: Put into the client's slot extent + 16 B request / 8 B reply; the server adopts
  the slot as the key's extent (no copy), releases the key's old extent, allocates a fresh slot and
  returns its offset;
- ``proto_get``: 16 B request / 16 B reply (offset, nbytes; the extent is pinned until the
  client's next request) + lock + Get + unlock;
- ``copy_put``: today's connect path for comparison: Put into a fixed slot + request + a server
  copy slot -> store + reply.

It also checks that the same memory can back several windows with osc=ucx (written through one
window, read back through the other, byte for byte) and times ``Win.Create`` of a 256 MiB and a
1 GiB arena. Prints a table and writes ``proto.json`` under ``--out-dir``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import run_job, summarize  # noqa: E402

from mpistage.jobs import kill_group  # noqa: E402

SIZES = {"602KiB": 224 * 224 * 3 * 4, "4MiB": 4 << 20, "16MiB": 16 << 20}
ARENA = 128 << 20  # the measured arena: room for a slot and a stored key of each size, twice
CREATE_SIZES = {"256MiB": 256 << 20, "1GiB": 1 << 30}
OP_STOP, OP_PUT, OP_GET, OP_COPY_PUT = 0, 1, 2, 3
HERE = Path(__file__).resolve()


class Extents:
    """First-fit extent allocator over ``[0, size)`` (free list of (offset, length), coalesced)."""

    def __init__(self, size: int) -> None:
        self.free: list[tuple[int, int]] = [(0, size)]

    def alloc(self, n: int) -> int:
        """Offset of a free extent of ``n`` bytes; MemoryError when none fits (the fallback case)."""
        for i, (off, length) in enumerate(self.free):
            if length >= n:
                self.free[i:i + 1] = [(off + n, length - n)] if length > n else []
                return off
        raise MemoryError(n)

    def release(self, off: int, n: int) -> None:
        """Give back ``[off, off + n)``, merged with its free neighbours."""
        self.free.append((off, n))
        self.free.sort()
        merged = [self.free[0]]
        for o, length in self.free[1:]:
            if merged[-1][0] + merged[-1][1] == o:
                merged[-1] = (merged[-1][0], merged[-1][1] + length)
            else:
                merged.append((o, length))
        self.free = merged


def iterations(quick: bool, nbytes: int) -> int:
    n = 60 if nbytes <= 1 << 20 else 30
    return n // 3 if quick else n


# ------------------------------------------------------------------ the serving side

def serve(comm, win, arena: np.ndarray) -> None:
    """Answer requests from rank 0 until OP_STOP."""
    ext = Extents(arena.size)
    store: dict[int, tuple[int, int]] = {}  # key -> (offset, nbytes) in the arena
    pins: list[int] = []  # keys pinned by the client's last get (released by its next request)
    slot_size = max(SIZES.values())
    slot = ext.alloc(slot_size)
    copy_store = np.empty(slot_size, np.uint8)  # today's path: a store buffer outside the window
    comm.Send(np.array([slot], np.int64), 0, 9)
    req = np.empty(2, np.int64)
    while True:
        comm.Recv(req, 0, 1)
        op, arg = int(req[0]), int(req[1])
        pins.clear()  # piggybacked release: any request ends the previous get's pin
        if op == OP_STOP:
            return
        if op == OP_PUT:  # adopt the slot as the key's extent; arg = nbytes, key = nbytes
            old = store.get(arg)
            store[arg] = (slot, arg)
            if old is not None:
                ext.release(old[0], slot_size)
            slot = ext.alloc(slot_size)
            comm.Send(np.array([slot], np.int64), 0, 2)
        elif op == OP_GET:
            off, n = store[arg]
            pins.append(arg)
            comm.Send(np.array([off, n], np.int64), 0, 2)
        elif op == OP_COPY_PUT:
            np.copyto(copy_store[:arg], arena[slot:slot + arg])
            comm.Send(np.array([slot], np.int64), 0, 2)


# ------------------------------------------------------------------ the client side (measures)

def timed_interleaved(k: int, ops: dict) -> dict[str, np.ndarray]:
    """Seconds per call of each of ``ops``, called in turn ``k`` times after 3 warm-up rounds."""
    times = {name: np.empty(k) for name in ops}
    for i in range(k + 3):
        for name, fn in ops.items():
            t0 = time.perf_counter()
            fn()
            if i >= 3:
                times[name][i - 3] = time.perf_counter() - t0
    return times


def one_size(win, MPI, slot: np.ndarray, request, reply: np.ndarray, label: str, n: int, k: int) -> list[dict]:
    """Every operation at one size, then a put/get round trip verified byte for byte."""
    records = []
    buf = np.full(n, 7, np.uint8)
    back = np.empty(n, np.uint8)

    def raw_put():
        win.Lock(1, MPI.LOCK_SHARED)
        win.Put(buf, 1, (int(slot[0]), n, MPI.BYTE))
        win.Unlock(1)

    def raw_get():
        win.Lock(1, MPI.LOCK_SHARED)
        win.Get(back, 1, (int(slot[0]), n, MPI.BYTE))
        win.Unlock(1)

    def proto_put():
        raw_put()
        request(OP_PUT, n, 1)
        slot[0] = reply[0]

    def proto_get():
        request(OP_GET, n, 2)
        win.Lock(1, MPI.LOCK_SHARED)
        win.Get(back, 1, (int(reply[0]), int(reply[1]), MPI.BYTE))
        win.Unlock(1)

    def copy_put():
        raw_put()
        request(OP_COPY_PUT, n, 1)

    ops = {"raw_rma_put": raw_put, "raw_rma_get": raw_get, "proto_put": proto_put, "proto_get": proto_get,
           "copy_put": copy_put}
    times = timed_interleaved(k, ops)  # round robin, so that load spikes hit every operation alike
    records += [{"operation": name, "size": label, "bytes": n, **summarize(times[name], n)} for name in ops]
    buf[:] = np.arange(n, dtype=np.uint64).astype(np.uint8)  # a distinct pattern, verified
    proto_put()
    proto_get()
    if not np.array_equal(back, buf):
        raise SystemExit(f"proto_get read back other bytes than proto_put stored ({label})")
    return records


def client(comm, win, MPI, quick: bool) -> list[dict]:
    """Rank 0: every operation at every size; returns the records."""
    slot = np.empty(1, np.int64)
    comm.Recv(slot, 1, 9)
    req, reply = np.empty(2, np.int64), np.empty(2, np.int64)
    records = []

    def request(op: int, arg: int, nreply: int) -> None:
        req[0], req[1] = op, arg
        comm.Send(req, 1, 1)
        if nreply:  # OP_STOP is not answered
            comm.Recv(reply[:nreply], 1, 2)

    for label, n in SIZES.items():
        records += one_size(win, MPI, slot, request, reply, label, n, iterations(quick, n))
    request(OP_STOP, 0, 0)
    return records


# ------------------------------------------------------------------ setup checks

def two_windows_same_memory(comm, MPI) -> dict:
    """Write through one window over the arena memory, read back through a second over the same."""
    rank = comm.Get_rank()
    n = 1 << 20
    mem = np.zeros(n if rank == 1 else 1, np.uint8)
    win_a = MPI.Win.Create(mem, 1, MPI.INFO_NULL, comm)
    win_b = MPI.Win.Create(mem, 1, MPI.INFO_NULL, comm)
    ok = True
    if rank == 0:
        pattern = (np.arange(n) % 251).astype(np.uint8)
        back = np.empty(n, np.uint8)
        win_a.Lock(1, MPI.LOCK_EXCLUSIVE)
        win_a.Put(pattern, 1, (0, n, MPI.BYTE))
        win_a.Unlock(1)
        win_b.Lock(1, MPI.LOCK_SHARED)
        win_b.Get(back, 1, (0, n, MPI.BYTE))
        win_b.Unlock(1)
        ok = bool(np.array_equal(back, pattern))
    comm.Barrier()
    if rank == 1:
        ok = bool(np.array_equal(mem, (np.arange(n) % 251).astype(np.uint8)))  # the target sees it too
    oks = comm.allgather(ok)
    win_a.Free()
    win_b.Free()
    return {"check": "two Win.Create over one buffer, put via A, get via B", "ok": all(oks)}


def create_costs(comm, MPI) -> list[dict]:
    """Time Win.Create (collective; only rank 1 exposes memory) and Free over a touched arena."""
    rank = comm.Get_rank()
    out = []
    for label, n in CREATE_SIZES.items():
        for kind in ("numpy", "Alloc_mem"):
            if rank == 1:
                mem = MPI.Alloc_mem(n) if kind == "Alloc_mem" else np.empty(n, np.uint8)
                np.frombuffer(mem, np.uint8)[:] = 1  # touch every page, as a used arena would be
            else:
                mem = np.empty(1, np.uint8)
            comm.Barrier()
            t0 = time.perf_counter()
            win = MPI.Win.Create(mem, 1, MPI.INFO_NULL, comm)
            t1 = time.perf_counter()
            win.Free()
            t2 = time.perf_counter()
            create, free = comm.allreduce(t1 - t0, MPI.MAX), comm.allreduce(t2 - t1, MPI.MAX)
            if rank == 1 and kind == "Alloc_mem":
                MPI.Free_mem(mem)
            del mem
            out.append({"arena": label, "memory": kind, "win_create_ms": round(create * 1e3, 2),
                        "win_free_ms": round(free * 1e3, 2)})
    return out


# ------------------------------------------------------------------ roles

def role_job(args: argparse.Namespace) -> None:
    from mpistage.mpienv import mpi

    MPI = mpi()
    port_file = Path(args.port_file)
    if args.side == "accept":
        port = MPI.Open_port()
        tmp = port_file.with_suffix(".tmp")
        tmp.write_text(port)
        tmp.replace(port_file)
        inter = MPI.COMM_SELF.Accept(port)
    else:
        while not port_file.exists() or not port_file.read_text():
            time.sleep(0.05)
        inter = MPI.COMM_SELF.Connect(port_file.read_text())
    comm = inter.Merge(args.side == "accept")  # client (connect side) is rank 0, server rank 1
    rank = comm.Get_rank()
    result: dict = {"two_windows": two_windows_same_memory(comm, MPI)}
    arena = np.zeros(ARENA if rank == 1 else 1, np.uint8)
    win = MPI.Win.Create(arena, 1, MPI.INFO_NULL, comm)
    if rank == 1:
        serve(comm, win, arena)
    else:
        result["records"] = client(comm, win, MPI, args.quick)
    comm.Barrier()
    win.Free()
    result["win_create"] = create_costs(comm, MPI)
    comm.Free()
    inter.Disconnect()
    if rank == 0:
        Path(args.out).write_text(json.dumps(result))


def drive(args: argparse.Namespace) -> None:
    from mpistage.cli import mpi_environ

    env = mpi_environ()
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        uri, port_file, out = tmp / "uri", tmp / "port", tmp / "proto.json"
        ompi = subprocess.Popen(["ompi-server", "--no-daemonize", "--report-uri", str(uri)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            while not uri.exists() or not uri.read_text():
                time.sleep(0.05)
            job = ["mpiexec", "--ompi-server", f"file:{uri}", "-n", "1", sys.executable, str(HERE), "--role", "job",
                   "--port-file", str(port_file), "--out", str(out), *(["--quick"] if args.quick else [])]
            acceptor = subprocess.Popen([*job, "--side", "accept"], env=env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.STDOUT, start_new_session=True)
            try:
                run_job([*job, "--side", "connect"], env, timeout=400)
                acceptor.wait(timeout=60)
            finally:
                kill_group(acceptor)
        finally:
            ompi.terminate()
            ompi.wait(timeout=30)
        result = json.loads(out.read_text())
    report(result)
    result["env"] = {"osc": env.get("OMPI_MCA_osc"), "quick": args.quick, "arena_bytes": ARENA,
                     "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "load1": os.getloadavg()[0]}
    (out_dir / "proto.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {out_dir / 'proto.json'}")


def report(result: dict) -> None:
    """Print the ratio table (raw p50 / prototype p50) and the setup checks."""
    recs = {(r["operation"], r["size"]): r for r in result["records"]}
    print(f"{'size':>7} {'op':>10} {'p50 us':>9} {'p99 us':>9} {'raw p50':>9} {'ratio':>6}")
    for label in SIZES:
        for op, raw in (("proto_put", "raw_rma_put"), ("copy_put", "raw_rma_put"), ("proto_get", "raw_rma_get")):
            r, b = recs[(op, label)], recs[(raw, label)]
            r["ratio_to_raw"] = round(b["p50_us"] / r["p50_us"], 3)
            print(f"{label:>7} {op:>10} {r['p50_us']:9.1f} {r['p99_us']:9.1f} {b['p50_us']:9.1f} "
                  f"{r['ratio_to_raw']:6.2f}")
    print(result["two_windows"])
    for c in result["win_create"]:
        print(c)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--role", choices=["driver", "job"], default="driver")
    p.add_argument("--side", choices=["accept", "connect"])
    p.add_argument("--port-file")
    p.add_argument("--out", help="job role: where the measuring side writes its JSON")
    p.add_argument("--out-dir", default=str(HERE.parent / "results" / f"{date.today().isoformat()}-window-proto"))
    p.add_argument("--quick", action="store_true", help="fewer iterations")
    args = p.parse_args()
    {"driver": drive, "job": role_job}[args.role](args)


if __name__ == "__main__":
    main()
