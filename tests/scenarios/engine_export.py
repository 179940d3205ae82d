"""torch.export programs with backend TORCH on a real server rank: set from an nn.Module with
example inputs (the client exports it), from .pt2 bytes and from a file, told apart from TorchScript
by content; batching only when dim 0 is dynamic; results equal to the same program called
in-process; the EKE preprocessing shipped as a program and as an ONNX model checked against the
Python functions; an AOTInductor package refused (no --allow-aoti); TF and TFLITE told to convert
to ONNX; what INFO says. One client rank."""

import io
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
from scenario_checks import check, raises

from inference.eke_features import fit_standardization, preprocess_reference
from inference.eke_preprocess_models import eke_preprocess_onnx, eke_preprocess_program
from mpistage import BadArgumentError, Client

c = Client()
TOL = {"rtol": 1e-5, "atol": 1e-6}
rng = np.random.default_rng(0)


def info(name: str) -> dict:
    return c.get_server_info()[0]["engine"]["models"][name]


class Mlp(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TwoInTwoOut(torch.nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return a - b, a * b


mlp = Mlp().eval()
x = rng.standard_normal((6, 4)).astype(np.float32)
with torch.no_grad():
    want = mlp(torch.from_numpy(x)).numpy()

# ---------------------------------------------------------------- nn.Module + example_inputs
c.set_model("mlp", mlp, example_inputs=torch.zeros(4, 4), batch_size=64, min_batch_size=24,
            min_batch_timeout=5000)
sent = c.get_model("mlp")
assert zipfile.ZipFile(io.BytesIO(sent)).read("archive/archive_format").strip() == b"pt2", "not a .pt2"
in_process = torch.export.load(io.BytesIO(sent)).module()
for i in range(4):
    c.put_tensor(f"x{i}", x + i)
handles = [c.run_model_async("mlp", f"x{i}", f"y{i}") for i in range(4)]
for h in handles:
    h.wait()
for i in range(4):
    with torch.no_grad():
        np.testing.assert_allclose(c.get_tensor(f"y{i}"), in_process(torch.from_numpy(x + i)).numpy(), rtol=1e-4,
                                   atol=1e-5)
np.testing.assert_allclose(c.get_tensor("y0"), want, rtol=1e-4, atol=1e-5)
m = info("mlp")
assert m["batching"].startswith("dynamic") and m["requests"] == 4 and m["batches"] == 1, m
check("set_model(nn.Module, example_inputs) sends a torch.export program; dynamic dim 0: 4 requests, 1 batch")

# ---------------------------------------------------------------- .pt2 bytes, static, file, 2 in 2 out
static = torch.export.export(mlp, (torch.zeros(6, 4),))  # no dynamic_shapes: dim 0 is 6 for good
buf = io.BytesIO()
torch.export.save(static, buf)
c.set_model("static", buf.getvalue(), batch_size=64, min_batch_size=24, min_batch_timeout=5000)
handles = [c.run_model_async("static", f"x{i}", f"s{i}") for i in range(3)]
for h in handles:
    h.wait()
np.testing.assert_allclose(c.get_tensor("s0"), want, rtol=1e-4, atol=1e-5)
s = info("static")
assert s["batching"].startswith("off") and s["batch_size"] == 0 and s["batches"] == 3, s
check("a program with a static dim 0: one request per run")

two = torch.export.export(TwoInTwoOut(), (torch.ones(3, 2), torch.ones(3, 2)),
                          dynamic_shapes=({0: torch.export.Dim("n")}, {0: torch.export.Dim("n")}))
with tempfile.TemporaryDirectory() as tmp:
    path = Path(tmp) / "two.pt2"
    torch.export.save(two, str(path))
    c.set_model_from_file("two", path)
a, b = rng.random((5, 2), np.float32), rng.random((5, 2), np.float32)
c.put_tensor("a", a)
c.put_tensor("b", b)
c.run_model("two", ["a", "b"], ["d", "p"])
np.testing.assert_allclose(c.get_tensor("d"), a - b, **TOL)
np.testing.assert_allclose(c.get_tensor("p"), a * b, **TOL)
raises(BadArgumentError, c.run_model, "two", ["a"], ["d", "p"], match="takes 2 inputs, 1 given")
check("set_model_from_file(.pt2), two inputs and two outputs in order, arity checked")

# ---------------------------------------------------------------- EKE preprocessing without TorchScript
feat = np.stack([rng.random(300) + 0.1, rng.standard_normal(300), rng.random(300) + 0.01, rng.random(300)], 1)
feat = feat.astype(np.float32)
feat[7, 1] = 0.0
means, stds = (v.astype(np.float32) for v in fit_standardization(feat))
reference = preprocess_reference(feat, means, stds)
c.put_tensor("feat", feat)
c.put_tensor("means", means)
c.put_tensor("stds", stds)
c.set_model("eke_pre_pt2", eke_preprocess_program())
c.set_model("eke_pre_onnx", eke_preprocess_onnx(), backend="ONNX")
for name in ("eke_pre_pt2", "eke_pre_onnx"):
    c.run_model(name, ["feat", "means", "stds"], f"{name}_out")
    got = c.get_tensor(f"{name}_out")
    np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-5)
    print(f"  {name}: max |served - numpy reference| = {np.abs(got - reference).max():.2e}")
check("EKE preprocessing as a torch.export program and as an ONNX model == preprocess_reference")

# ---------------------------------------------------------------- refusals
aoti = io.BytesIO()
with zipfile.ZipFile(io.BytesIO(sent)) as src, zipfile.ZipFile(aoti, "w") as dst:
    for item in src.namelist():  # a package with AOTInductor's layout: the program plus its compiled library
        dst.writestr(item, src.read(item))
    dst.writestr("archive/data/aotinductor/model/model.wrapper.so", b"\x7fELF not really")
msg = raises(BadArgumentError, c.set_model, "aoti", aoti.getvalue(), match="AOTInductor package")
assert "--allow-aoti" in msg, msg
print("AOTI:", msg)
for backend in ("TF", "TFLITE"):
    msg = raises(BadArgumentError, c.set_model, "tf", b"x", backend=backend, match="to ONNX")
    print(f"{backend}:", msg)
raises(BadArgumentError, c.set_model, "junk", b"PK\x03\x04 not a zip", match="neither a TorchScript archive")
c.run_model("mlp", "x0", "y_after")  # the server goes on
np.testing.assert_allclose(c.get_tensor("y_after"), want, rtol=1e-4, atol=1e-5)
check("AOTInductor refused without --allow-aoti; TF/TFLITE say convert to ONNX; junk refused")

runtime = c.get_server_info()[0]["engine"]["runtimes"]["TORCH"]
print("TORCH runtime:", runtime)
assert runtime["models_loaded_by_format"] == {"torch.export": 4}, runtime
assert runtime["aoti_allowed"] is False and runtime["torchscript_deprecated"] is False, runtime
check("INFO: formats loaded, AOTI not allowed, no TorchScript deprecation met")
print("engine_export: all checks passed", flush=True)
