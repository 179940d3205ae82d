"""Fuzzing the wire under real mpiexec: 20,000 mutated raw messages (seeded) mixed with valid
traffic against two shards; every valid value read back must be right, and no shard may die
(tests/scenarios/wire_fuzz.py; the longer run is scaling/fuzz.py). 20,000 rather than 10,000 so that
the fuzzer's 2,000 expected values (~37 KB pickled) pass mpi4py's 32 KiB ``irecv`` buffer: the
scenario once received them with ``comm.irecv`` and corrupted the bystander's heap past it."""

from harness import run_mpmd


def test_twenty_thousand_mutated_messages_corrupt_nothing_and_kill_no_shard():
    out = run_mpmd("wire_fuzz.py", servers=2, clients=2, server_args=["--payload-timeout", "2"],
                   app_args=["20000", "1"], timeout=240).stdout
    assert "fuzz OK" in out, out
    stats = dict(kv.split("=") for kv in out.split("fuzz stats ", 1)[1].split("\n", 1)[0].split())
    assert int(stats["mutated"]) == 20_000 and int(stats["valid_pairs"]) == 2000, stats
    assert int(stats["reread"]) == 2000, stats  # all 2,000 expected values reached the bystander
    assert stats["wrong"] == stats["reread_wrong"] == stats["bystander_wrong"] == "0", stats
    assert int(stats["discarded_messages"]) > 0, stats  # strays were thrown away, not matched
