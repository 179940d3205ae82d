"""Dead clients cannot stall a shard (connect mode, real mpiexec): client jobs are killed with
SIGKILL mid-put and mid-get, through point-to-point messages and the one-sided window, after
a payload was announced but never sent, and while idle, while a bystander job keeps doing checked
round trips on the same shards. The bystander must go on throughout, a later job must connect,
an idle dead job's link must be let go, and the servers must stop cleanly."""

import json
import os
import re
import select
import signal
import subprocess
import sys
import time

import pytest
from harness import PYTHON, run, script, started_servers

from mpistage.jobs import kill_group, mpi_environ

PAYLOAD_TIMEOUT = 3.0
ONE_SIDED = ["put-rma", "get-rma", "announce"]
#: Known failure, Open MPI's (3 of 4 runs in session 2, 2 of 2 on 2026-12-02 20:33): after a client
#: dies in the middle of a 48 MiB point-to-point transfer over TCP, the shard in that transfer
#: deadlocks inside Open MPI 4.1's TCP BTL: writev fails (ECONNRESET), mca_btl_tcp_endpoint_close runs
#: the PML's completion callbacks, one sends (mca_pml_ob1_send_fin -> mca_btl_tcp_endpoint_send) and
#: waits for the endpoint lock its own progress call holds (gdb: main thread in PMPI_Improbe ->
#: opal_progress -> ... -> pthread_mutex_lock, for good). The shard then serves nobody, so the bystander
#: stalls. See docs/security.md, "A client killed mid point-to-point transfer".
POINT_TO_POINT = pytest.param(["put-p2p", "get-p2p"], marks=pytest.mark.xfail(
    reason="Open MPI 4.1 TCP BTL self-deadlock on the endpoint lock after a peer dies mid-transfer "
           "(docs/security.md)", strict=False))


def _job(servers, *argv: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "mpistage.cli", "run", "--dir", str(servers.dir), "-n", "1", "--",
           sys.executable, *argv]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=mpi_environ(), start_new_session=True)


def _kill_when_ready(victim: subprocess.Popen, deadline: float, before_kill=lambda: None) -> str:
    """Wait for the victim's READY line, let it run into its transfers (``before_kill()`` runs
    then), then SIGKILL it."""
    seen = []
    while time.monotonic() < deadline:
        if not select.select([victim.stdout], [], [], max(0.0, deadline - time.monotonic()))[0]:
            break
        line = victim.stdout.readline()
        seen.append(line)
        found = re.search(r"victim READY pid=(\d+)", line)
        if found:
            time.sleep(0.4)  # inside its loop of transfers
            before_kill()
            os.kill(int(found.group(1)), signal.SIGKILL)
            return "".join(seen)
        if not line and victim.poll() is not None:
            break
    raise AssertionError("the victim never got ready:\n" + "".join(seen))


@pytest.mark.parametrize("modes", [ONE_SIDED, POINT_TO_POINT], ids=["one-sided-and-announced", "point-to-point"])
def test_killed_clients_do_not_stall_the_shards_or_a_bystander(tmp_path, modes):
    stop = tmp_path / "stop"
    with started_servers(shards=2, server_args=["--payload-timeout", str(PAYLOAD_TIMEOUT)]) as servers:
        bystander = _job(servers, script("dead_bystander.py"), str(stop))
        try:
            for mode in modes:
                victim = _job(servers, script("dead_victim.py"), mode)
                try:
                    _kill_when_ready(victim, time.monotonic() + 90)
                    victim.communicate(timeout=60)
                finally:
                    kill_group(victim)
                assert bystander.poll() is None, f"the bystander stopped after the {mode} kill:\n" + \
                    bystander.communicate()[0]
            time.sleep(PAYLOAD_TIMEOUT + 1)  # every deadline of the killed jobs has passed
            stop.touch()
            try:
                out = bystander.communicate(timeout=60)[0]
            except subprocess.TimeoutExpired:
                kill_group(bystander)
                raise AssertionError("the bystander stalled:\n" + bystander.communicate()[0] +
                                     servers.server_log()) from None
        finally:
            kill_group(bystander)
        assert bystander.returncode == 0 and "bystander OK" in out, out
        worst = float(re.search(r"worst_ms=([\d.]+)", out).group(1))
        # no round trip waited for a dead client's transfer (those wait PAYLOAD_TIMEOUT at least)
        assert worst < PAYLOAD_TIMEOUT * 1e3, out
        later = servers.run_singleton("dead_bystander.py", [str(stop)], timeout=60).stdout
        assert "bystander OK" in later, later + servers.server_log()


def _info(servers) -> list[dict]:
    out = run([PYTHON, "-m", "mpistage.cli", "info", "--dir", str(servers.dir)], timeout=60).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_an_idle_job_killed_has_its_link_let_go(tmp_path):
    """A job SIGKILLed while idle sends nothing that could fail: the shards notice that its
    processes are gone (they were listed in its hello) and drop its link within a few seconds;
    the bystander goes on."""
    stop = tmp_path / "stop"
    with started_servers(shards=2, server_args=["--payload-timeout", str(PAYLOAD_TIMEOUT)]) as servers:
        bystander = _job(servers, script("dead_bystander.py"), str(stop))
        victim = _job(servers, script("dead_victim.py"), "idle")
        try:
            watched = []
            _kill_when_ready(victim, time.monotonic() + 90, lambda: watched.extend(_info(servers)))
            killed = time.monotonic()
            victim.communicate(timeout=60)
            # bystander, victim and the info job itself: each a watched one-rank link on both shards
            assert [sorted(lk["watched_pids"] for lk in s["links"] if lk["kind"] == "connect")
                    for s in watched] == [[1, 1, 1]] * 2, watched
            while True:
                shards = _info(servers)
                if all(s["dropped_links"] == 1 and s["client_jobs"] == 2 for s in shards):
                    break
                assert time.monotonic() - killed < 30, f"the dead job's link is still held: {shards}"
                time.sleep(0.5)
            released = time.monotonic() - killed
            assert bystander.poll() is None, bystander.communicate()[0]
            stop.touch()
            out = bystander.communicate(timeout=60)[0]
        finally:
            kill_group(victim)
            kill_group(bystander)
        assert bystander.returncode == 0 and "bystander OK" in out, out
        assert "every process of its job is gone" in servers.server_log()
        print(f"idle dead job released {released:.1f} s after its SIGKILL")
