"""The ONNX runtime (backend ONNX / ORT): the safety checks on their own (no MPI), then models from
torch.onnx.export, skl2onnx and Keras 3 on a real server rank started ONNX-only with scripts off
(tests/scenarios/engine_onnx.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
from harness import ROOT, SCENARIOS, run, run_mpmd, server_command

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper  # noqa: E402

from mpistage.errors import BadArgumentError  # noqa: E402
from mpistage.server.engine.onnx_check import checked_model  # noqa: E402
from mpistage.server.engine.onnx_runtime import OnnxRuntime  # noqa: E402
from mpistage.server.engine.runtime import RuntimeOptions  # noqa: E402


def external(name: str) -> TensorProto:
    t = helper.make_tensor(name, TensorProto.FLOAT, [3], [0.0, 0.0, 0.0])
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    t.external_data.add(key="location", value="../../etc/passwd")
    return t


def model_with(initializer=(), nodes=(), training=False) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])
    graph = helper.make_graph(list(nodes) or [helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y],
                              initializer=list(initializer))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if training:
        info = model.training_info.add()
        info.initialization.CopyFrom(helper.make_graph([], "init", [], [], initializer=[external("t")]))
    return model


def test_every_tensor_is_seen_and_external_data_refused() -> None:
    loop_body = helper.make_graph([helper.make_node("Constant", [], ["c"], value=external("deep"))], "body", [], [])
    nested = helper.make_node("Loop", ["", ""], [], body=loop_body)
    for model, where in ((model_with(initializer=[external("w")]), "graph initializer 'w'"),
                         (model_with(nodes=[nested, helper.make_node("Relu", ["x"], ["y"])]),
                          "attribute 'body' subgraph node 'Constant' attribute 'value'"),
                         (model_with(training=True), "training_info[0] initialization initializer 't'")):
        with pytest.raises(BadArgumentError, match="external file") as err:
            checked_model("m", model.SerializeToString())
        assert where in str(err.value) and "'../../etc/passwd'" in str(err.value), str(err.value)
    assert checked_model("ok", model_with().SerializeToString()).graph.name == "g"
    with pytest.raises(BadArgumentError, match="not an ONNX model"):
        checked_model("junk", b"\xff\xff\xff garbage")


def test_session_is_cpu_only_with_an_empty_external_data_folder(tmp_path) -> None:
    import os

    rt = OnnxRuntime(RuntimeOptions(threads=1))
    assert os.listdir(rt.empty_dir) == []
    run, warning = rt.load_model("m", model_with().SerializeToString(), "CPU", 0)
    assert warning is None and run.session.get_providers() == ["CPUExecutionProvider"]
    assert run.batchable and run.arity == (1, 1) and run.device == "cpu"
    so = rt._session_options()
    assert so.get_session_config_entry("session.model_external_initializers_file_folder_path") == rt.empty_dir


def test_onnx_models_on_an_onnx_only_server() -> None:
    out = run_mpmd("engine_onnx.py", servers=1, clients=1, server_args=["--backends", "ONNX,ORT", "--no-scripts"],
                   timeout=240).stdout
    assert "engine_onnx: all checks passed" in out, out
    for what in ("declared order", "skl2onnx", "Keras 3", "one request per run", "hostile models refused",
                 "scripts refused", "torch never imported"):
        assert what in out, (what, out)


@pytest.mark.skipif(shutil.which("mpif90") is None, reason="needs mpif90 (Open MPI + gfortran)")
def test_onnx_model_from_fortran(tmp_path) -> None:
    """set_model_from_file(..., 'ONNX') and run_model from the Fortran client: two inputs and two
    outputs in the model's declared order, checked against Fortran's matmul."""
    w = np.array([[j + 10 * k for k in range(2)] for j in range(4)], np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["p"]), helper.make_node("Sub", ["p", "b"], ["q"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, ["n", 2])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["n", 2]),
         helper.make_tensor_value_info("q", TensorProto.FLOAT, ["n", 2])],
        initializer=[helper.make_tensor("w", TensorProto.FLOAT, [4, 2], w.ravel().tolist())])
    model = tmp_path / "model.onnx"
    model.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    run(["make", "-s", "-C", str(ROOT / "fortran")], timeout=300)
    flags = subprocess.run([sys.executable, "-m", "mpistage.fortran_config", "--fflags", "--flibs"], check=True,
                           capture_output=True, text=True).stdout.split()
    exe = tmp_path / "onnx_fortran"
    run(["mpif90", *[f for f in flags if f.startswith("-I")], str(SCENARIOS / "onnx_fortran.f90"),
         *[f for f in flags if not f.startswith("-I")], "-o", str(exe)], timeout=120, cwd=tmp_path)
    out = run(["mpiexec", "-n", "1", *server_command(), ":", "-n", "1", str(exe), str(model)], timeout=120,
              cwd=tmp_path).stdout
    assert "onnx_fortran: 0 failures" in out, out
    for what in ("p == matmul(x, W)", "q == p - b", "not ONNX: model 'fbad' is not an ONNX model"):
        assert what in out, (what, out)
