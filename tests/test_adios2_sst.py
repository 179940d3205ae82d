"""SST streams between two processes through the ADIOS2 backend and plain ``adios2``: interop
both ways, and faults (a step that does not come, a writer or reader that goes away, a full
queue). Each end is a subprocess in its own process group, killed at its timeout."""

from __future__ import annotations

import json
import signal
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("adios2")

from harness import PYTHON, run, script  # noqa: E402

LOSSLESS = "params=RendezvousReaderCount:1,QueueFullPolicy:Block"
PEER_TIMEOUT = 90


def peers(path, writer: list[str], reader: list[str]) -> tuple[dict, dict, str, str]:
    """Run a writer and a reader of the SST stream ``path`` at once; each one's JSON lines."""
    def one(role_args: list[str]):
        return run([PYTHON, script("adios2_sst_peer.py"), role_args[0], str(path), *role_args[1:]],
                   timeout=PEER_TIMEOUT, check=False, cwd=str(path.parent))
    with ThreadPoolExecutor(2) as pool:
        w, r = pool.submit(one, writer), pool.submit(one, reader)
        w, r = w.result(), r.result()
    return _last_json(w.stdout), _last_json(r.stdout), w, r


def _last_json(out: str) -> dict:
    lines = [line for line in out.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {"no_json": out[-2000:]}


def test_mpistage_writer_to_stock_reader(tmp_path):
    w, r, wp, rp = peers(tmp_path / "s", ["mpistage-writer", "4", LOSSLESS], ["stock-reader", "0"])
    assert wp.returncode == 0 and rp.returncode == 0, (wp.stdout, rp.stdout)
    assert w["wrote"] == 4
    assert r["seen"] == [0, 1, 2, 3] and all(all(c.values()) for c in r["checks"]), r


def test_stock_writer_to_mpistage_reader(tmp_path):
    w, r, wp, rp = peers(tmp_path / "s", ["stock-writer", "4"], ["mpistage-reader", "6", "expect_f=0"])
    assert wp.returncode == 0 and rp.returncode == 0, (wp.stdout, rp.stdout)
    assert r["seen"] == [0, 1, 2, 3] and r["events"] == ["ok"] * 4 + ["end"], r


def test_mpistage_writer_to_mpistage_reader_with_step_timeouts(tmp_path):
    w, r, wp, rp = peers(tmp_path / "s", ["mpistage-writer", "3", LOSSLESS, "sleep=3"],
                         ["mpistage-reader", "3", "timeout=1", "tries=12"])
    assert wp.returncode == 0 and rp.returncode == 0, (wp.stdout, rp.stdout)
    assert r["seen"] == [0, 1, 2], r
    assert "timeout" in r["events"] and r["events"][-1] == "end", r  # a timeout is not the end
    assert r["events"].count("ok") == 3


def test_writer_that_dies_ends_the_readers_stream(tmp_path):
    w, r, wp, rp = peers(tmp_path / "s", ["mpistage-writer", "10", LOSSLESS, "die_after=2", "sleep=0.5"],
                         ["mpistage-reader", "10", "timeout=30"])
    assert wp.returncode == -signal.SIGKILL and w == {"died_after": 2}
    assert rp.returncode == 0, rp.stdout
    # SST keeps a step's data in the writer's memory: the reader has what it pulled before the
    # death (step 0, published 0.5 s before; step 1 only if pulled in time), then the stream ends
    assert r["seen"] in ([0], [0, 1]) and r["events"][-1] in ("end", "error:ServerUnreachableError"), r


def test_reader_that_dies_does_not_stop_the_writer(tmp_path):
    w, r, wp, rp = peers(tmp_path / "s", ["mpistage-writer", "12", "params=RendezvousReaderCount:1", "sleep=0.2"],
                         ["mpistage-reader", "12", "die_after=2"])
    assert rp.returncode == -signal.SIGKILL and r == {"died_after": 2}
    assert wp.returncode == 0 and w["wrote"] == 12, wp.stdout


def test_full_queue_drops_steps_and_the_reader_counts_them(tmp_path):
    # QueueFullPolicy=Discard (the default): a full queue drops the step being published, the
    # writer never waits; the reader sees the steps that were queued and counts the gaps
    w, r, wp, rp = peers(tmp_path / "s",
                         ["mpistage-writer", "40", "params=RendezvousReaderCount:1,QueueLimit:2", "sleep=0.05"],
                         ["mpistage-reader", "40", "sleep=0.3", "timeout=5", "tries=40"])
    assert wp.returncode == 0 and rp.returncode == 0, (wp.stdout, rp.stdout)
    assert w["wrote"] == 40
    seen = r["seen"]
    assert seen == sorted(set(seen)) and len(seen) < 40, r
    assert r["steps_missed"] == seen[-1] + 1 - len(seen) > 0, r
    assert r["events"][-1] == "end" and set(r["events"][:-1]) == {"ok"}, r
