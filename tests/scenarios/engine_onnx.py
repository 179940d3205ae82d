"""ONNX models on real server ranks started with ``--backends ONNX,ORT --no-scripts`` (a server
shared between users): models from torch.onnx.export, skl2onnx and Keras 3, set from bytes and from
a file, inputs and outputs bound in the model's declared order, dynamic batching on a symbolic
dim 0 and none on a fixed one, hostile models (external data in each place it can hide) refused
with the server going on, TORCH models and scripts refused, and what INFO says. One client rank."""

import os
import tempfile
import warnings
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import io  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import torch  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402
from scenario_checks import check, raises  # noqa: E402

from mpistage import BadArgumentError, Client, ServerRuntimeError  # noqa: E402

c = Client()
TOL = {"rtol": 1e-5, "atol": 1e-6}
rng = np.random.default_rng(0)


def info(name: str) -> dict:
    return c.get_server_info()[0]["engine"]["models"][name]


# ---------------------------------------------------------------- torch.onnx.export, 2 in 2 out
class TwoInTwoOut(torch.nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return a - b, 2 * a + b


buf = io.BytesIO()
with warnings.catch_warnings():  # the legacy (TorchScript-based) exporter says it is deprecated
    warnings.simplefilter("ignore", DeprecationWarning)
    torch.onnx.export(TwoInTwoOut(), (torch.ones(2, 3), torch.ones(2, 3)), buf, input_names=["a", "b"],
                      output_names=["diff", "mix"], dynamic_axes={"a": {0: "n"}, "b": {0: "n"}}, dynamo=False)
c.set_model("two", buf.getvalue(), backend="ONNX")
a, b = rng.random((5, 3), np.float32), rng.random((5, 3), np.float32)
c.put_tensor("a", a)
c.put_tensor("b", b)
c.run_model("two", ["a", "b"], ["d", "m"])
np.testing.assert_allclose(c.get_tensor("d"), a - b, **TOL)
np.testing.assert_allclose(c.get_tensor("m"), 2 * a + b, **TOL)
c.run_model("two", ["b", "a"], ["d", "m"])
np.testing.assert_allclose(c.get_tensor("d"), b - a, **TOL)
check("torch.onnx.export model: inputs and outputs in declared order")
assert info("two")["backend"] == "ONNX" and info("two")["batching"].startswith("dynamic"), info("two")

# ---------------------------------------------------------------- skl2onnx
from skl2onnx import to_onnx  # noqa: E402
from sklearn.linear_model import LinearRegression, LogisticRegression  # noqa: E402

X = rng.random((40, 4)).astype(np.float32)
reg = LinearRegression().fit(X, X @ np.array([1.0, -2.0, 0.5, 3.0]) + 0.25)
c.set_model("reg", to_onnx(reg, X[:1]).SerializeToString(), backend="ORT")
c.put_tensor("X", X)
c.run_model("reg", "X", "yhat")
np.testing.assert_allclose(c.get_tensor("yhat").ravel(), reg.predict(X), rtol=1e-4, atol=1e-4)
clf = LogisticRegression().fit(X, (X[:, 0] > 0.5).astype(np.int64))
msg = raises(BadArgumentError, c.set_model, "clf", to_onnx(clf, X[:1]).SerializeToString(), backend="ONNX",
             match="not a tensor")
print("refused zipmap:", msg)
assert "zipmap" in msg, msg
clf_onnx = to_onnx(clf, X[:1], options={id(clf): {"zipmap": False}}).SerializeToString()
c.set_model("clf", clf_onnx, backend="ONNX")
c.run_model("clf", "X", ["label", "proba"])
np.testing.assert_array_equal(c.get_tensor("label"), clf.predict(X))
np.testing.assert_allclose(c.get_tensor("proba"), clf.predict_proba(X), rtol=1e-4, atol=1e-5)
check("skl2onnx regressor and classifier (zipmap off: label and probabilities as tensors)")

# ---------------------------------------------------------------- Keras 3 (torch backend)
import keras  # noqa: E402

kmodel = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="relu"), keras.layers.Dense(2)])
kmodel(X[:2])
with tempfile.TemporaryDirectory() as tmp:
    path = Path(tmp) / "keras.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's tracer warnings
        kmodel.export(str(path), format="onnx", verbose=False)
    c.set_model_from_file("keras", path, backend="ONNX")
c.run_model("keras", "X", "k")
np.testing.assert_allclose(c.get_tensor("k"), kmodel.predict(X, verbose=0), rtol=1e-4, atol=1e-5)
check("Keras 3 model.export(format='onnx') set from a file")


# ---------------------------------------------------------------- batching: symbolic vs fixed dim 0
def relu_model(dim0, extra_init=None, nodes=None, functions=(), sparse=()) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [dim0, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [dim0, 3])
    graph = helper.make_graph(nodes or [helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y],
                              initializer=extra_init or [], sparse_initializer=list(sparse))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], functions=list(functions))


c.set_model("dyn", relu_model("batch").SerializeToString(), backend="ONNX", batch_size=64, min_batch_size=16,
            min_batch_timeout=5000)
c.set_model("fixed", relu_model(4).SerializeToString(), backend="ONNX", batch_size=64, min_batch_size=16,
            min_batch_timeout=5000)
xs = [rng.standard_normal((4, 3)).astype(np.float32) for _ in range(4)]
for i, x in enumerate(xs):
    c.put_tensor(f"x{i}", x)
for model in ("dyn", "fixed"):
    handles = [c.run_model_async(model, f"x{i}", f"{model}{i}") for i in range(4)]
    for h in handles:
        h.wait()
    for i, x in enumerate(xs):
        np.testing.assert_allclose(c.get_tensor(f"{model}{i}"), np.maximum(x, 0), **TOL)
dyn, fixed = info("dyn"), info("fixed")
assert dyn["requests"] == 4 and dyn["batches"] == 1, dyn
assert fixed["requests"] == 4 and fixed["batches"] == 4 and fixed["batch_size"] == 0, fixed
assert fixed["requested_batch_size"] == 64 and fixed["batching"].startswith("off: first input dimension is fixed (4)")
print("batching:", dyn["batching"], "|", fixed["batching"])
check("symbolic dim 0: 4 requests in 1 batch; fixed dim 0: one request per run")

# ---------------------------------------------------------------- hostile models
secret = Path("mpistage-onnx-secret.bin")  # in the server's working directory (the same here)
secret.write_bytes(np.arange(3, dtype=np.float32).tobytes())


def external(name: str, dims=(3,)) -> TensorProto:
    t = helper.make_tensor(name, TensorProto.FLOAT, list(dims), [0.0] * int(np.prod(dims)))
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", str(secret)), ("offset", "0"), ("length", "12")):
        t.external_data.add(key=k, value=v)
    return t


def add_of(tensor_name: str) -> list:
    return [helper.make_node("Add", ["x", tensor_name], ["y"])]


const_node = helper.make_node("Constant", [], ["w"], value=external("w_value"))
then_graph = helper.make_graph([helper.make_node("Constant", [], ["t"], value=external("t_value"))], "then", [],
                               [helper.make_tensor_value_info("t", TensorProto.FLOAT, [3])])
if_node = helper.make_node("If", ["cond"], ["w"], then_branch=then_graph, else_branch=then_graph)
cond_init = helper.make_tensor("cond", TensorProto.BOOL, [], [True])
fn = helper.make_function("local", "AddW", ["x"], ["y"],
                          [helper.make_node("Constant", [], ["w"], value=external("f_value")),
                           helper.make_node("Add", ["x", "w"], ["y"])], [helper.make_opsetid("", 17)])
sparse = helper.make_sparse_tensor(external("s_values", (1,)), helper.make_tensor("s_idx", TensorProto.INT64, [1], [0]),
                                   [3])
sparse.values.name = "w"
hostile = {
    "initializer": relu_model("n", extra_init=[external("w")], nodes=add_of("w")),
    "attribute": relu_model("n", nodes=[const_node, *add_of("w")]),
    "subgraph": relu_model("n", extra_init=[cond_init], nodes=[if_node, *add_of("w")]),
    "function": relu_model("n", nodes=[helper.make_node("AddW", ["x"], ["y"], domain="local")], functions=[fn]),
    "sparse initializer": relu_model("n", nodes=add_of("w"), sparse=[sparse]),
}
hostile["function"].opset_import.append(helper.make_opsetid("local", 1))
c.put_tensor("h", np.ones((2, 3), np.float32))
for kind, model in hostile.items():
    msg = raises(BadArgumentError, c.set_model, f"hostile_{kind}", model.SerializeToString(), backend="ONNX",
                 match="external file")
    assert kind.split()[0] in msg, (kind, msg)
    print(f"refused ({kind}):", msg)
    assert not c.model_exists(f"hostile_{kind}")
    c.run_model("dyn", "h", "h_out")  # the server goes on
    np.testing.assert_allclose(c.get_tensor("h_out"), np.ones((2, 3)))
secret.unlink()
check("hostile models refused (initializer, attribute, subgraph, function, sparse initializer); server goes on")

# ---------------------------------------------------------------- other errors and refusals
raises(BadArgumentError, c.set_model, "junk", b"\x00\x01 not onnx at all", backend="ONNX", match="not an ONNX model")
msg = raises(ServerRuntimeError, c.run_model, "two", ["a", "X"], ["d", "m"], match="model 'two' failed")
print("shape error:", msg)
c.put_tensor("a64", a.astype(np.float64))
raises(ServerRuntimeError, c.run_model, "two", ["a64", "b"], ["d", "m"], match="failed")
raises(BadArgumentError, c.run_model, "two", ["a"], ["d", "m"], match="takes 2 inputs, 1 given")
msg = raises(BadArgumentError, c.set_model, "tf", b"x", backend="TF", match="convert the TensorFlow model to ONNX")
ts = io.BytesIO()
torch.jit.save(torch.jit.script(TwoInTwoOut()), ts)
msg = raises(BadArgumentError, c.set_model, "ts", ts.getvalue(), backend="TORCH", match="not accepted by this server")
print("TORCH refused:", msg)
msg = raises(BadArgumentError, c.set_script, "s", "def f(x):\n    return x\n", match="scripts are disabled")
print("script refused:", msg)
check("errors: not ONNX, wrong shape, wrong dtype, wrong arity, TF, TORCH and scripts refused")

# ---------------------------------------------------------------- INFO
engine = c.get_server_info()[0]["engine"]
assert set(engine["runtimes"]) == {"ONNX"}, engine["runtimes"]
assert engine["accepted_backends"] == ["ONNX", "ORT"] and engine["scripts_enabled"] is False, engine
assert engine["torch_imported"] is False, "an ONNX-only server never imports torch"
print("runtime:", engine["runtimes"]["ONNX"])
check("INFO: ONNX runtime, accepted backends, scripts disabled, torch never imported on the server")
print("engine_onnx: all checks passed", flush=True)
