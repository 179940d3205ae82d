"""The inference engine on real server ranks under mpiexec (tests/scenarios/engine_*.py, which
print what they checked and exit non-zero on failure). The batching policy and the engine's
scheduling without MPI: tests/test_server_units.py."""

from __future__ import annotations

from harness import run_mpmd


def test_engine_api_on_two_shards():
    out = run_mpmd("engine_api.py", servers=2, clients=1, timeout=360).stdout
    assert "engine_api: all checks passed" in out, out
    for what in ("either shard", "set_function", "store answers while a model runs",
                 "replaces a model atomically", "device='GPU'", "out of memory", "statistics"):
        assert what in out, (what, out)


def test_batching_four_concurrent_clients():
    out = run_mpmd("engine_batching.py", servers=2, clients=4, timeout=360).stdout
    assert "engine_batching: all checks passed" in out, out
    assert "rank 2 got: model 'picky' failed: ValueError: negative input is not allowed" in out, out
