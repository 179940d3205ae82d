"""The ADIOS2 bridge in the server ranks, end to end against 2 started shards (connect mode):
a BP5 export of 2 steps read by stock ``adios2.FileReader`` (each shard's file holds its keys),
an SST export read by a stock ``adios2.Stream``, a stock SST writer's 3 steps ingested and read
back with ``get_tensor``, BRIDGE_STOP's reports, and the same through ``mpistage bridge``."""

from __future__ import annotations

import json

import numpy as np
import pytest

adios2 = pytest.importorskip("adios2")

from harness import PYTHON, run, started_servers  # noqa: E402

from mpistage.router import shard_of  # noqa: E402


def test_bridge_exports_and_ingests(tmp_path):
    with started_servers(shards=2) as servers:
        assert "exported" in servers.run_singleton("adios2_bridge_check.py", ["export", str(tmp_path)],
                                                   timeout=180).stdout
        assert "ingested" in servers.run_singleton("adios2_bridge_check.py", ["ingest", str(tmp_path)],
                                                   timeout=180).stdout

        servers.run_singleton("adios2_bridge_check.py", ["seed"])
        cli = [PYTHON, "-m", "mpistage.cli", "bridge"]
        out = tmp_path / "cli.bp"
        opened = run([*cli, "export", "--dir", str(servers.dir), "--name", "cli", "--engine", "BP5",
                      "--path", str(out), "--tensors", "cli.a", "--steps", "2"], timeout=90)
        steps = [json.loads(line) for line in opened.stdout.splitlines() if line.startswith("{")]
        assert [s.get("step") for s in steps[1:]] == [0, 1] and steps[1]["tensors"] == ["cli.a"], opened.stdout
        stopped = run([*cli, "stop", "--dir", str(servers.dir), "--name", "cli"], timeout=90)
        reports = [json.loads(line) for line in stopped.stdout.splitlines() if line.startswith("{")]
        assert [(r["state"], r["steps"]) for r in reports] == [("stopped", 2)] * 2, stopped.stdout
        with adios2.FileReader(f"{out}.shard{shard_of('cli.a', 2)}") as fr:
            assert fr.available_variables()["cli.a"]["AvailableStepsCount"] == "2"
            np.testing.assert_array_equal(fr.read("cli.a"), np.arange(6, dtype=np.int32).reshape(2, 3))
        missing = run([*cli, "stop", "--dir", str(servers.dir), "--name", "cli"], timeout=90, check=False)
        assert missing.returncode == 1 and "no bridge 'cli'" in missing.stdout, missing.stdout
