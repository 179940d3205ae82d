"""The ONNX runtime (backend ONNX / ORT): the safety checks on their own (no MPI), then models from
torch.onnx.export, skl2onnx and Keras 3 on a real server rank started ONNX-only with scripts off
(tests/scenarios/engine_onnx.py)."""

from __future__ import annotations

import pytest
from harness import run_mpmd

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
