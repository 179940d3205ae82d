"""Fuzzing the wire under real mpiexec: 10,000 mutated raw messages (seeded) mixed with valid
traffic against two shards; every valid value read back must be right, and no shard may die
(tests/scenarios/wire_fuzz.py; the longer run is scaling/fuzz.py)."""

from harness import run_mpmd


def test_ten_thousand_mutated_messages_corrupt_nothing_and_kill_no_shard():
    out = run_mpmd("wire_fuzz.py", servers=2, clients=2, server_args=["--payload-timeout", "2"],
                   app_args=["10000", "1"], timeout=240).stdout
    assert "fuzz OK" in out, out
    stats = dict(kv.split("=") for kv in out.split("fuzz stats ", 1)[1].split("\n", 1)[0].split())
    assert int(stats["mutated"]) == 10_000 and int(stats["valid_pairs"]) == 1000, stats
    assert stats["wrong"] == stats["reread_wrong"] == stats["bystander_wrong"] == "0", stats
    assert int(stats["discarded_messages"]) > 0, stats  # strays were thrown away, not matched
