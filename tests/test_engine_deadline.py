"""Engine calls have a deadline (issue 14 point 5): tests/scenarios/engine_deadline.py on a real
server rank started with ``--model-timeout 3``, with an endless TorchScript script."""

from __future__ import annotations

import time

from harness import run_mpmd


def test_endless_script_times_out_and_the_engine_goes_on() -> None:
    start = time.monotonic()
    result = run_mpmd("engine_deadline.py", servers=1, clients=1, server_args=["--model-timeout", "3"], timeout=180)
    out = result.stdout
    assert "engine_deadline: all checks passed" in out, out
    for what in ("after SR_MODEL_TIMEOUT", "new worker", "worker is replaced", "--model-timeout (3 s)",
                 "3 timeouts, 2 workers replaced"):
        assert what in out, (what, out)
    assert "its worker is abandoned and a new one serves the other calls" in out, out  # the server says so
    assert "terminate called" not in out, out  # the servers exit cleanly with abandoned workers spinning
    print(f"wall {time.monotonic() - start:.1f} s")
