"""A SmartRedis program that changed only its import, against real servers: connect mode (SSDB
names the connection file of ``mpistage start``; two shards) and MPMD (no SSDB)."""

from __future__ import annotations

import json
import sys

from harness import run, run_mpmd, script, started_servers

OK = "SMARTREDIS APP OK"


def test_smartredis_program_in_connect_mode(tmp_path):
    other = tmp_path / "other_address"
    other.write_text(json.dumps({"backend": "mpi", "port": "elsewhere", "shards": 1, "protocol": 1}))
    with started_servers(shards=2) as servers:
        result = run([sys.executable,
                      script("smartredis_app.py"), str(other)], 120, {"SSDB": str(servers.address)})
    assert OK in result.stdout, result.stdout


def test_smartredis_program_in_mpmd_mode():
    result = run_mpmd("smartredis_app.py", servers=1, clients=1, timeout=120)
    assert OK in result.stdout, result.stdout
