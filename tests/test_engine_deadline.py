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


def test_timeout_sources_and_the_count_field(monkeypatch) -> None:
    """Where a run's deadline comes from (server: --model-timeout, else SR_MODEL_TIMEOUT in ms,
    else 60 s; client: SR_MODEL_TIMEOUT sent per call) and how it travels (the count field)."""
    import argparse

    import pytest

    from mpistage.client_engine import _timeout_ms
    from mpistage.errors import BadArgumentError
    from mpistage.protocol import U32
    from mpistage.server.engine.requests import decode_run
    from mpistage.server.engine.runtime import add_engine_arguments, options_from

    parser = argparse.ArgumentParser()
    add_engine_arguments(parser)
    monkeypatch.delenv("SR_MODEL_TIMEOUT", raising=False)
    assert options_from(parser.parse_args([])).model_timeout_s == 60.0
    assert _timeout_ms(None) == 0  # the server decides
    monkeypatch.setenv("SR_MODEL_TIMEOUT", "2500")
    assert options_from(parser.parse_args([])).model_timeout_s == 2.5
    assert options_from(parser.parse_args(["--model-timeout", "7"])).model_timeout_s == 7.0
    assert _timeout_ms(None) == 2500 and _timeout_ms(0.25) == 250
    monkeypatch.setenv("SR_MODEL_TIMEOUT", "soon")
    with pytest.raises(BadArgumentError, match="milliseconds"):
        _timeout_ms(None)
    with pytest.raises(BadArgumentError, match="more than 0"):
        _timeout_ms(-1)
    opts = options_from(parser.parse_args(["--backends", "onnx", "--no-scripts", "--model-timeout", "1"]))
    assert opts.backends == {"ONNX"} and not opts.scripts and not opts.allow_aoti
    with pytest.raises(BadArgumentError, match="not accepted by this server"):
        opts.check_backend("TORCH")
    with pytest.raises(SystemExit):
        parser.parse_args(["--backends", "ONNX,CAFFE"])

    key = [memoryview(b"m"), memoryview(b"in"), memoryview(b"out")]
    plain = decode_run([key[0], memoryview(U32.pack(1)), *key[1:]], with_function=False)
    timed = decode_run([key[0], memoryview(U32.pack(1) + U32.pack(1500)), *key[1:]], with_function=False)
    assert (plain.timeout_ms, timed.timeout_ms) == (0, 1500) and timed.inputs == ["in"] and timed.outputs == ["out"]
