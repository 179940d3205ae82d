"""The bridge end to end, driven by its command line against servers in connect mode: export
store keys to a BP5 file read by stock adios2; ingest an SST stream that a plain-adios2 writer
publishes into the store, checked by another client."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

adios2 = pytest.importorskip("adios2")

from harness import PYTHON, run, script, started_servers  # noqa: E402

BRIDGE = [PYTHON, "-m", "mpistage.backends.adios2_bridge"]


def test_bridge_exports_to_bp5_and_ingests_sst(tmp_path):
    with started_servers(shards=2) as servers:
        env = servers.client_env()
        servers.run_singleton("adios2_bridge_check.py", ["seed"])
        out = tmp_path / "export.bp"
        run([*BRIDGE, "export", "--engine", "BP5", "--path", str(out), "--keys", "out.a",
             "--datasets", "out.ds", "--steps", "2"], timeout=90, env=env)
        with adios2.FileReader(str(out)) as fr:
            assert fr.available_variables()["out.a"]["AvailableStepsCount"] == "2"
            expected = np.arange(12, dtype=np.float32).reshape(3, 4)
            np.testing.assert_array_equal(fr.read("out.a", step_selection=[1, 1]), expected)
            assert fr.read_attribute_string("out.a/mpistage.order") == "F"
            np.testing.assert_array_equal(fr.read("out.ds/t"), np.arange(5))
            assert fr.read_attribute_string("out.ds/units") == "K"

        stream = tmp_path / "sim"
        with ThreadPoolExecutor(2) as pool:
            writer = pool.submit(run, [PYTHON, script("adios2_sst_peer.py"), "stock-writer", str(stream), "3"],
                                 timeout=90, check=False)
            bridge = pool.submit(run, [*BRIDGE, "ingest", "--engine", "SST", "--path", str(stream),
                                       "--prefix", "in.", "--step-keys", "--keys", "u", "probe/p",
                                       "--timeout", "30"], timeout=90, env=env, check=False)
            writer, bridge = writer.result(), bridge.result()
        assert writer.returncode == 0, writer.stdout
        assert bridge.returncode == 0 and "ingested 3 steps" in bridge.stdout, bridge.stdout
        assert "verified" in servers.run_singleton("adios2_bridge_check.py", ["verify"]).stdout
