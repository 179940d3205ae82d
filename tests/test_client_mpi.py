"""The Python client's defects of issue 7 under real mpiexec and server ranks: reply payloads are
drained and request ids are not reused while in flight (6a), no hang after shutdown_servers (6b),
a failed connect leaves the servers able to take the next job (6d), set_model/set_script all or
nothing (6e). Each scenario is bounded by a timeout."""

import json
import sys

from harness import run, run_mpmd, script, started_servers


def test_reply_payload_drained_and_seq_never_reused_while_in_flight():
    out = run_mpmd("client_drain_and_seq.py", timeout=240).stdout
    assert "drain OK" in out and "seq OK" in out, out


def test_client_after_shutdown_servers_is_a_clear_error_in_mpmd():
    out = run_mpmd("client_after_shutdown.py", timeout=90).stdout
    assert "after shutdown OK" in out, out
    assert out.count("ServerUnreachableError") == 2, out


def test_wrong_shard_count_fails_clearly_and_a_later_job_connects(tmp_path):
    with started_servers(shards=2) as servers:
        address = json.loads(servers.address.read_text())
        wrong = tmp_path / "wrong-address"
        wrong.write_text(json.dumps({**address, "shards": 3}))
        out = run([sys.executable, script("client_wrong_shards.py")], 90,
                  {"MPISTAGE_ADDRESS": str(wrong)}).stdout
        assert "wrong shards OK" in out and "says 3" in out, out
        assert "roundtrip OK" in servers.run_singleton("roundtrip.py", timeout=120).stdout


def test_set_model_and_set_script_are_all_or_nothing_over_shards():
    out = run_mpmd("client_model_all_or_nothing.py", servers=2, timeout=240).stdout
    assert "all or nothing OK" in out, out
    assert "partial failure removes the name from every shard" in out
