"""Server ranks and the Python client under real mpiexec: MPMD, connect (jobs and singletons),
bad input, the memory cap, a soak, snapshots and shutdown. Each scenario is bounded."""

import pytest
from harness import run, run_mpmd, started_servers


def test_mpmd_roundtrip_two_shards_two_clients():
    out = run_mpmd("roundtrip.py", servers=2, clients=2, timeout=180).stdout
    assert out.count("roundtrip OK") == 2 and "2 shards" in out


def test_mpmd_job_ends_by_itself_with_one_shard():
    out = run_mpmd("roundtrip.py", servers=1, clients=1, timeout=120).stdout
    assert "roundtrip OK" in out


def test_mpmd_ignores_a_stray_address_variable():
    out = run_mpmd("roundtrip.py", env={"MPISTAGE_ADDRESS": "/nonexistent/address"}, timeout=120).stdout
    assert "roundtrip OK" in out


def test_malformed_messages_and_store_full_keep_server_serving():
    out = run_mpmd("malformed.py", server_args=["--max-memory", "1M", "--payload-timeout", "1"],
                   timeout=120).stdout
    assert "malformed OK" in out
    for case in ("bad magic", "unknown op", "over-long key", "payload never sent",
                 "payload smaller than shape", "missing key", "StoreFullError"):
        assert case in out


def test_soak_four_clients_two_shards():
    out = run_mpmd("soak.py", servers=2, clients=4, app_args=["2500"], timeout=300).stdout
    assert out.count("soak OK") == 4
    assert "all ranks" in out


def test_connect_mode_jobs_come_and_go(tmp_path):
    with started_servers(shards=2) as servers:
        first = servers.run_client("roundtrip.py", clients=2, timeout=180)
        assert first.stdout.count("roundtrip OK") == 2
        # a second job connects after the first one left; a singleton (no mpiexec) too
        assert servers.run_client("soak.py", clients=2, app_args=["500"]).stdout.count("soak OK") == 2
        assert "roundtrip OK" in servers.run_singleton("roundtrip.py").stdout
        info = run([*_cli(), "info", "--dir", servers.dir], 60).stdout
        assert info.count('"shard"') == 2


def test_connect_mode_concurrent_jobs():
    import subprocess
    import sys

    from harness import script

    from mpistage.cli import mpi_environ

    with started_servers(shards=2) as servers:
        procs = [subprocess.Popen([sys.executable, "-m", "mpistage.cli", "run", "--dir", str(servers.dir),
                                   "-n", "2", "--", sys.executable, script("soak.py"), "800"],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  env=mpi_environ(), start_new_session=True) for _ in range(2)]
        outs = []
        for p in procs:
            try:
                outs.append(p.communicate(timeout=180)[0])
            except subprocess.TimeoutExpired:
                for q in procs:
                    q.kill()
                pytest.fail("concurrent client jobs timed out")
        assert all(p.returncode == 0 for p in procs), outs
        assert sum(o.count("soak OK") for o in outs) == 4


def test_snapshot_on_request_restores_bit_exact_on_other_shard_count(tmp_path):
    snap = tmp_path / "snap"
    out = run_mpmd("snapshot.py", servers=2, server_args=["--snapshot", str(snap)],
                   app_args=["write", "--save"]).stdout
    assert "snapshot write OK" in out
    assert sorted(p.name for p in snap.iterdir()) == ["shard-0-of-2.h5", "shard-1-of-2.h5"]
    out = run_mpmd("snapshot.py", servers=3, server_args=["--restore", str(snap)], app_args=["verify"]).stdout
    assert "snapshot verify OK on 3 shards" in out


def test_sigterm_shutdown_writes_snapshot(tmp_path):
    snap = tmp_path / "snap"
    with started_servers(shards=2, server_args=["--snapshot", str(snap)]) as servers:
        assert "snapshot write OK" in servers.run_singleton("snapshot.py", ["write"]).stdout
    # leaving the block ran `mpistage stop`: SIGTERM, then each shard wrote its file
    assert sorted(p.name for p in snap.iterdir()) == ["shard-0-of-2.h5", "shard-1-of-2.h5"]
    out = run_mpmd("snapshot.py", servers=1, server_args=["--restore", str(snap)], app_args=["verify"]).stdout
    assert "snapshot verify OK on 1 shards" in out


def test_client_request_shuts_servers_down():
    with started_servers(shards=1) as servers:
        code = "import mpistage; mpistage.Client().shutdown_servers(); print('asked')"
        out = run([sys_python(), "-c", code], 60, servers.client_env()).stdout
        assert "asked" in out
        import time

        deadline = time.monotonic() + 30
        while servers.address.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not servers.address.exists(), servers.server_log()


def test_no_servers_is_a_clear_error():
    out = run([sys_python(), "-c", "import mpistage; mpistage.Client()"], 60, check=False)
    assert out.returncode != 0 and "no servers" in out.stdout


def sys_python() -> str:
    import sys

    return sys.executable


def _cli() -> list[str]:
    return [sys_python(), "-m", "mpistage.cli"]


def test_importing_mpistage_does_not_start_mpi():
    """A singleton sets Open MPI's ompi-server address before MPI starts: imports must not start it."""
    code = ("import sys, mpistage, mpistage.server, mpistage.server.wake, mpistage.cli; "
            "print('mpi4py.MPI' in sys.modules)")
    assert run([sys_python(), "-c", code], 60).stdout.strip() == "False"
