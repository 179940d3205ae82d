"""The soak, on demand: servers started in connect mode (2 shards, snapshots on), 6 client jobs of
mixed operations (tests/scenarios/soak_worker.py: tensors on every path, datasets and lists, a
TorchScript model and a script, engine faults, deletes, saves), one of them SIGKILLed every
``--kill-every`` seconds and started again (its new incarnation first checks every value the
killed one stored). At the end every worker checks its journal once more. Prints operations,
values verified, values lost or wrong, kills, shard memory before and after, the worst latency;
writes ``scaling/results/soak.json``; exits non-zero on a lost or wrong value.

    .venv/bin/python scaling/soak.py --seconds 600       # the 10-minute soak
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mpistage.jobs import kill_group, mpi_environ, run_bounded

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "scenarios" / "soak_worker.py"
CLI = [sys.executable, "-m", "mpistage.cli"]
INFO = ("import json, mpistage; c = mpistage.Client(); "
        "print('INFO ' + json.dumps([[s['rss_bytes'], s['bytes_used']] for s in c.get_server_info()]))")


def _model(path: Path) -> None:
    import torch

    class Affine(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.dim() != 2 or x.size(1) != 3:
                raise ValueError("Affine expects an (n, 3) input")
            return 2 * x + 1

    torch.jit.script(Affine()).save(str(path))


def _memory(run: Path) -> list[list[int]]:
    """Per shard: resident memory and the bytes its store counts."""
    out = run_bounded([sys.executable, "-c", INFO], 120, {"MPISTAGE_ADDRESS": str(run / "address")}).stdout
    return json.loads(out.split("INFO ", 1)[1].splitlines()[0])


def _worker(run: Path, wid: int, seconds: float, model: Path) -> subprocess.Popen:
    cmd = [*CLI, "run", "--dir", str(run), "-n", "1", "--", sys.executable, str(WORKER), str(wid),
           str(seconds), str(run / f"journal-{wid}"), str(model)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=mpi_environ(),
                            start_new_session=True)


def _stats(out: str) -> dict | None:
    for line in out.splitlines():
        if line.startswith("soak worker stats "):
            return json.loads(line.removeprefix("soak worker stats "))
    return None


def soak(seconds: float, workers: int, kill_every: float, shards: int, run: Path) -> dict:
    model = run / "affine.pt"
    _model(model)
    server_args = f"--snapshot {run / 'snap'} --payload-timeout 5"
    run_bounded([*CLI, "start", "--shards", str(shards), "--dir", str(run), "--server-args", server_args], 120)
    finished: list[dict] = []
    kills, failures = 0, []
    try:
        before = _memory(run)
        rng = np.random.default_rng(0)
        start = time.monotonic()
        end = start + seconds
        procs = {w: _worker(run, w, seconds, model) for w in range(workers)}
        next_kill = start + kill_every
        while procs:
            now = time.monotonic()
            for w, p in list(procs.items()):
                if p.poll() is not None:
                    out = p.communicate()[0]
                    stats = _stats(out)
                    if stats is None:
                        failures.append(out[-3000:])
                    else:
                        finished.append(stats)
                    del procs[w]
            if now >= next_kill and now < end - kill_every / 2 and procs:
                w = int(rng.choice(sorted(procs)))
                kill_group(procs[w])  # SIGKILL: the worker and its mpiexec, mid-operation
                procs[w].communicate()
                kills += 1
                procs[w] = _worker(run, w, max(end - time.monotonic(), 1.0), model)
                next_kill = now + kill_every
            if time.monotonic() > end + 300:
                failures.append("workers did not finish within 300 s of the end")
                for p in procs.values():
                    kill_group(p)
                break
            time.sleep(0.2)
        # every worker checks its journal once more (0 seconds of new operations)
        for w in range(workers):
            p = _worker(run, w, 0, model)
            out = p.communicate(timeout=300)[0]
            stats = _stats(out)
            if stats is None:
                failures.append(out[-3000:])
            else:
                finished.append(stats)
        after = _memory(run)
    finally:
        subprocess.run([*CLI, "stop", "--dir", str(run)], timeout=120, env=mpi_environ(), capture_output=True)
    total = {k: sum(s[k] for s in finished) for k in ("operations", "verified", "lost", "wrong", "engine_faults",
                                                      "saves", "recovered_checked")}
    return {"seconds": seconds, "workers": workers, "shards": shards, "kills": kills, **total,
            "worst_ms": round(max((s["worst_ms"] for s in finished), default=0.0), 1),
            "worst_op": max(finished, key=lambda s: s["worst_ms"])["worst_op"] if finished else "",
            "rss_before_mib": [round(b[0] / 2**20, 1) for b in before],
            "rss_after_mib": [round(a[0] / 2**20, 1) for a in after],
            "stored_after_mib": [round(a[1] / 2**20, 1) for a in after], "failures": failures}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=600)
    p.add_argument("--workers", type=int, default=6)
    p.add_argument("--kill-every", type=float, default=30)
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--json", type=Path, default=Path(__file__).resolve().parent / "results" / "soak.json")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="mpistage-soak-") as tmp:
        result = soak(args.seconds, args.workers, args.kill_every, args.shards, Path(tmp))
    print(f"soak: {result['seconds']:.0f} s, {result['workers']} clients, {result['kills']} kills: "
          f"{result['operations']} operations, {result['verified']} values verified, lost={result['lost']} "
          f"wrong={result['wrong']}, {result['engine_faults']} engine faults reported, {result['saves']} saves, "
          f"{result['recovered_checked']} values re-read after kills; shard memory {result['rss_before_mib']} MiB "
          f"before, {result['rss_after_mib']} MiB after (the stores count {result['stored_after_mib']} MiB); "
          f"worst latency {result['worst_ms']} ms "
          f"({result['worst_op']})", flush=True)
    for f in result["failures"]:
        print(f"soak: a worker failed:\n{f}", flush=True)
    args.json.parent.mkdir(exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    if result["lost"] or result["wrong"] or result["failures"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
