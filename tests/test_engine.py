"""The inference engine: the batching policy on its own, then real server ranks under mpiexec
(tests/scenarios/engine_*.py, which print what they checked and exit non-zero on failure)."""

from __future__ import annotations

import numpy as np
import pytest
from harness import run_mpmd

from mpistage.server.batcher import BatchPolicy, BatchQueue, Job, job_shape, split_rows


def job(rows: int | None, sig: tuple = ("f32", (4,)), t: float = 0.0) -> Job:
    return Job([], 1, lambda *_: None, rows, sig, enqueued=t)


def test_job_shape_signature_and_rows():
    a, b = np.zeros((3, 4), np.float32), np.zeros((3, 2), np.float64)
    rows, sig = job_shape([a, b])
    assert rows == 3 and sig == (2, ("float32", (4,)), ("float64", (2,)))
    assert job_shape([a, np.zeros((2, 4), np.float32)])[0] is None  # dim 0 differ
    assert job_shape([np.float32(1.0)])[0] is None  # 0-d input


def test_no_batch_size_runs_one_at_a_time():
    q = BatchQueue()
    for _ in range(3):
        q.push(job(2))
    assert [len(q.take(BatchPolicy(0), 0.0)[0]) for _ in range(3)] == [1, 1, 1]
    assert q.take(BatchPolicy(0), 0.0) == ([], None)


def test_joins_up_to_batch_size_in_order_and_skips_incompatible():
    q = BatchQueue()
    jobs = [job(3), job(2, sig=("f64", (4,))), job(4), job(2), job(1)]
    for j in jobs:
        q.push(j)
    group, _ = q.take(BatchPolicy(batch_size=8), 0.0)
    assert group == [jobs[0], jobs[2], jobs[4]]  # 3 + 4 + 1 rows; 2 more would exceed 8
    assert list(q.jobs) == [jobs[1], jobs[3]]


def test_request_larger_than_batch_size_runs_alone():
    q = BatchQueue()
    big, small = job(10), job(1)
    q.push(big)
    q.push(small)
    assert q.take(BatchPolicy(batch_size=4, min_batch_size=4, min_batch_timeout_ms=100), 0.0)[0] == [big]


def test_min_batch_size_waits_until_timeout():
    q = BatchQueue()
    q.push(job(1, t=10.0))
    policy = BatchPolicy(batch_size=8, min_batch_size=3, min_batch_timeout_ms=200)
    group, wait = q.take(policy, 10.05)
    assert group == [] and wait == pytest.approx(0.15)
    q.push(job(1, t=10.06))
    assert q.take(policy, 10.07)[0] == []
    q.push(job(1, t=10.08))
    assert len(q.take(policy, 10.09)[0]) == 3  # enough rows: runs before the timeout
    q.push(job(1, t=20.0))
    assert len(q.take(policy, 20.3)[0]) == 1  # timeout passed: runs short
    q.push(job(1, t=30.0))
    assert q.take(BatchPolicy(8, 3, 0), 99.0) == ([], None)  # no timeout: waits (RedisAI)


def test_split_rows():
    out = np.arange(12).reshape(6, 2)
    a, b, c = split_rows(out, [1, 3, 2])
    assert a.tolist() == [[0, 1]] and b.shape == (3, 2) and c.tolist() == [[8, 9], [10, 11]]
    with pytest.raises(ValueError, match="rows"):
        split_rows(out, [2, 2])


def test_engine_api_on_two_shards():
    out = run_mpmd("engine_api.py", servers=2, clients=1, timeout=150).stdout
    assert "engine_api: all checks passed" in out, out
    for what in ("either shard", "set_function", "store answers while a model runs",
                 "replaces a model atomically", "device='GPU'", "out of memory", "statistics"):
        assert what in out, (what, out)


def test_batching_four_concurrent_clients():
    out = run_mpmd("engine_batching.py", servers=2, clients=4, timeout=150).stdout
    assert "engine_batching: all checks passed" in out, out
    assert "rank 2 got: model 'picky' failed: ValueError: negative input is not allowed" in out, out
