"""Four ranks, one global ADIOS2 variable: the assembled array equals the global one, with one
block per rank carrying its start and count, read by stock adios2 and by mpistage's reader."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

adios2 = pytest.importorskip("adios2")

from harness import PYTHON, SCENARIOS, run, script  # noqa: E402

from mpistage import Client  # noqa: E402
from mpistage.backends.adios2_config import adios2_backend  # noqa: E402


def scenario():
    spec = importlib.util.spec_from_file_location("adios2_decomp", SCENARIOS / "adios2_decomp.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["adios2_decomp"] = module
    spec.loader.exec_module(module)
    return module


def test_four_ranks_make_one_global_variable(tmp_path):
    path = tmp_path / "decomp.bp"
    out = run(["mpiexec", "-n", "4", PYTHON, script("adios2_decomp.py"), str(path)], timeout=120)
    assert out.stdout.count("refused") == 4, out.stdout
    sc = scenario()
    with adios2.FileReader(str(path)) as fr:
        info = fr.available_variables()
        assert info["T"]["Shape"] == "8, 6" and info["T"]["AvailableStepsCount"] == "2"
        for step in range(2):
            np.testing.assert_array_equal(fr.read("T", step_selection=[step, 1]), sc.global_field(step))
        assert fr.read("T", start=[2, 1], count=[3, 3], step_selection=[1, 1]).tolist() == \
            sc.global_field(1)[2:5, 1:4].tolist()  # a selection across four blocks
        np.testing.assert_array_equal(fr.read("ids", step_selection=[0, 1]),
                                      np.concatenate([np.arange(r * 5, r * 5 + 5 - r) for r in range(4)]))
        assert fr.read_attribute_string("T/dimensions") == "T_dim0 T_dim1"
        assert "bad" not in info
    with adios2.Stream(str(path), "rra") as s:
        blocks = s.engine.blocks_info("T", 0)
    starts = sorted((b["Start"], b["Count"]) for b in blocks)
    assert starts == [("0,0", "3,2"), ("0,2", "3,4"), ("3,0", "5,2"), ("3,2", "5,4")]
    r = Client(backend=adios2_backend("BP5", str(path), "reader", timeout_s=5))
    for step in range(2):
        np.testing.assert_array_equal(r.get_tensor("T"), sc.global_field(step))
        r.flush()
    r.shutdown_servers()
