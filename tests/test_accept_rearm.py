"""Shard 0 re-arms its idle accept (Open MPI 4's MPI_Comm_accept fails for good after ~5 min idle):
with a 1 s interval the re-arms happen, are not logged as refused jobs, and jobs still connect."""

from __future__ import annotations

import time

from harness import started_servers


def test_idle_accept_is_rearmed_and_jobs_still_connect():
    with started_servers(shards=2, server_args=["--accept-rearm", "1"]) as servers:
        deadline = time.monotonic() + 60
        while "re-armed the accept (2)" not in servers.server_log() and time.monotonic() < deadline:
            time.sleep(0.5)
        log = servers.server_log()
        assert "re-arming the accept every 1 s" in log and "re-armed the accept (2)" in log, log
        assert "refused" not in log and "failed" not in log, log
        assert "roundtrip OK" in servers.run_client("roundtrip.py", clients=2, timeout=120).stdout
