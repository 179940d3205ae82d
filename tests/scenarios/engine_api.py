"""The inference engine's API on two shards: models (module, bytes, file, traced), scripts
(function, source, file), runs with inputs and outputs on either shard, async handles, replacing a
model while requests are queued, the store answering while a model runs, GPU fallback, statistics,
and every error kind, each followed by a good run. One client rank (run it with 2 servers)."""

import io
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scenario_checks import check, raises
from torch import Tensor, nn

from mpistage import BadArgumentError, Client, KeyNotFoundError, ServerRuntimeError
from mpistage.router import shard_of

c = Client()
S = c.nshards
assert S == 2, "run with two server ranks"
TOL = {"rtol": 1e-5, "atol": 1e-6}


def on(shard: int, base: str) -> str:
    """A key named ``base...`` that lives on ``shard``."""
    return next(f"{base}{i}" for i in range(1000) if shard_of(f"{base}{i}", S) == shard)


class Affine(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.lin = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.lin(x)


class TwoInTwoOut(nn.Module):
    def forward(self, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        return a + b, a * b


class Slow(nn.Module):
    """Returns x * version after ``n`` 256x256 matmuls."""

    def __init__(self, version: float, n: int) -> None:
        super().__init__()
        self.version = version
        self.n = n

    def forward(self, x: Tensor) -> Tensor:
        w = torch.ones(256, 256) / 256.0
        y = torch.ones(256, 256)
        for _ in range(self.n):
            y = torch.mm(y, w)
        return x * self.version * y.mean()


class Raises(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        if bool((x < 0).any()):
            raise ValueError("negative input is not allowed")
        return x * 2


class Greedy(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return torch.empty(35184372088832) + x.sum()


# ---------------------------------------------------------------- models: set, get, exist, run
affine = Affine().eval()
c.set_model("affine", affine, batch_size=8)
assert c.model_exists("affine") and c.poll_model("affine", 10, 2)
assert not c.model_exists("nope") and not c.poll_model("nope", 10, 2)
blob = c.get_model("affine")
back = torch.jit.load(io.BytesIO(blob))
x = np.random.default_rng(0).random((5, 4), dtype=np.float32)
want = affine(torch.from_numpy(x)).detach().numpy()
assert np.allclose(back(torch.from_numpy(x)).detach().numpy(), want, **TOL)
check("set_model(nn.Module) is scripted, get_model returns loadable TorchScript bytes")

for shard_in in range(S):
    for shard_out in range(S):
        kin, kout = on(shard_in, f"x{shard_in}{shard_out}."), on(shard_out, f"y{shard_in}{shard_out}.")
        c.put_tensor(kin, x)
        c.run_model("affine", kin, kout)
        got = c.get_tensor(kout)
        assert got.shape == (5, 3) and got.dtype == np.float32 and np.allclose(got, want, **TOL)
check("run_model with the input and the output on either shard")

xf = np.asfortranarray(x)
c.put_tensor("xf", xf)
c.run_model("affine", ["xf"], ["yf"])
assert np.allclose(c.get_tensor("yf"), want, **TOL)
check("Fortran-ordered input")

with tempfile.TemporaryDirectory() as tmp:
    path = Path(tmp) / "affine.pt"
    torch.jit.save(torch.jit.script(affine), str(path))
    c.set_model_from_file("affine_file", path)
    c.set_model("affine_bytes", path.read_bytes())
c.set_model("affine_traced", affine, example_inputs=torch.zeros(2, 4))
for name in ("affine_file", "affine_bytes", "affine_traced"):
    c.run_model(name, "xf", "y_" + name)
    assert np.allclose(c.get_tensor("y_" + name), want, **TOL), name
check("set_model_from_file, set_model(bytes), set_model traced with example_inputs")

c.set_model("two", TwoInTwoOut())
a, b = np.arange(6, dtype=np.float64).reshape(2, 3), np.full((2, 3), 3.0)
ka, kb = on(0, "a."), on(1, "b.")
ks, kp = on(1, "sum."), on(0, "prod.")
c.put_tensor(ka, a)
c.put_tensor(kb, b)
c.run_model("two", [ka, kb], [ks, kp])
assert np.array_equal(c.get_tensor(ks), a + b) and np.array_equal(c.get_tensor(kp), a * b)
c.run_model("two", [kb, ka], [kp, ks])  # now runs on shard 1
assert np.array_equal(c.get_tensor(kp), a + b) and np.array_equal(c.get_tensor(ks), a * b)
check("two inputs and two outputs spread over both shards")

# ---------------------------------------------------------------- scripts


def add_scale(x: Tensor, y: Tensor) -> Tensor:
    return (x + y) * 0.5


c.set_function("fn", add_scale)
c.run_script("fn", "add_scale", [ka, kb], [on(1, "half.")])
assert np.allclose(c.get_tensor(on(1, "half.")), (a + b) * 0.5)
SOURCE = """
def double(x: Tensor) -> Tensor:
    return x * 2

def split(x: Tensor) -> Tuple[Tensor, Tensor]:
    return x[0], x[1]
"""
c.set_script("src", SOURCE)
assert c.get_script("src") == SOURCE
c.run_script("src", "double", ka, "dbl")
assert np.array_equal(c.get_tensor("dbl"), a * 2)
c.run_script("src", "split", [ka], [on(0, "r0."), on(1, "r1.")])
assert np.array_equal(c.get_tensor(on(0, "r0.")), a[0]) and np.array_equal(c.get_tensor(on(1, "r1.")), a[1])
with tempfile.TemporaryDirectory() as tmp:
    path = Path(tmp) / "script.txt"
    path.write_text(SOURCE)
    c.set_script_from_file("src_file", path)
c.run_script("src_file", "double", [kb], ["dbl2"])
assert np.array_equal(c.get_tensor("dbl2"), b * 2)
check("set_function, set_script, set_script_from_file, get_script, run_script (tuple outputs)")

# ---------------------------------------------------------------- async, responsiveness, replacement
c.set_model("slow", Slow(1.0, 300))
c.put_tensor("s_in", x)
t0 = time.monotonic()
handle = c.run_model_async("slow", "s_in", "s_out")
latencies = []
busy_seen = 0
while not handle.done():
    t = time.monotonic()
    c.put_tensor("ping", x)
    c.get_tensor("ping")
    latencies.append(time.monotonic() - t)
    busy_seen += not handle.done()
handle.wait()
run_s = time.monotonic() - t0
assert handle.done()
handle.wait()  # a second wait returns at once
assert np.allclose(c.get_tensor("s_out"), x)
assert busy_seen >= 3, f"only {busy_seen} store round trips while the model ran {run_s:.2f} s"
print(f"  model ran {run_s:.2f} s; {len(latencies)} put+get round trips meanwhile, "
      f"max {max(latencies) * 1e3:.1f} ms, median {np.median(latencies) * 1e3:.2f} ms")
assert max(latencies) < 0.5, max(latencies)
check("run_model_async: done()/wait(); the store answers while a model runs")

c.set_model("ver", Slow(1.0, 40))
ones = np.ones((2, 2), np.float32)
c.put_tensor("v_in", ones)
before = [c.run_model_async("ver", "v_in", f"v_out{i}") for i in range(6)]
c.set_model("ver", Slow(2.0, 40))
after = [c.run_model_async("ver", "v_in", f"v_out{i}") for i in range(6, 10)]
for h in before + after:
    h.wait()
versions = [float(c.get_tensor(f"v_out{i}")[0, 0]) for i in range(10)]
assert all(v in (1.0, 2.0) for v in versions) and versions[6:] == [2.0] * 4, versions
assert all(np.all(c.get_tensor(f"v_out{i}") == versions[i]) for i in range(10))
print(f"  versions seen by requests queued before/after the replacement: {versions}")
check("set_model replaces a model atomically while requests are queued")

# ---------------------------------------------------------------- GPU request
c.set_model("on_gpu", affine, device="GPU")
c.run_model("on_gpu", "xf", "y_gpu")
assert np.allclose(c.get_tensor("y_gpu"), want, rtol=1e-4, atol=1e-5)
info = c.get_server_info()
gpu = [i["engine"]["models"]["on_gpu"] for i in info]
assert all(g["requested_device"] == "GPU" for g in gpu)
if torch.cuda.is_available():
    assert all(g["device"].startswith("cuda:") for g in gpu), gpu
else:
    assert all(g["device"] == "cpu" for g in gpu), gpu
print(f"  device='GPU' runs on {[g['device'] for g in gpu]}")
check("device='GPU' (cuda:k when present, else CPU with a warning)")

# ---------------------------------------------------------------- errors, each followed by a good run
c.set_model("two_again", TwoInTwoOut())
c.set_model("raises", Raises())
c.set_model("greedy", Greedy())
c.put_tensor("bad_shape", np.ones((5, 7), np.float32))
c.put_tensor("bad_dtype", x.astype(np.float64))
c.put_tensor("negative", -np.ones((2, 4), np.float32))
cases = [
    (KeyNotFoundError, ("no_such_model", "xf", "o"), "does not exist"),
    (KeyNotFoundError, ("affine", "no_such_key", "o"), "no_such_key"),
    (KeyNotFoundError, ("affine", on(1, "missing_far."), on(0, "o.")), "does not exist"),
    (BadArgumentError, ("affine", ["xf", "xf"], ["o"]), "takes 1 inputs, 2 given"),
    (BadArgumentError, ("two_again", ["xf"], ["o", "p"]), "takes 2 inputs, 1 given"),
    (BadArgumentError, ("affine", ["xf"], ["o", "p"]), "returned 1 tensors, 2 output keys"),
    (ServerRuntimeError, ("affine", "bad_shape", "o"), "shapes"),
    (ServerRuntimeError, ("affine", "bad_dtype", "o"), "dtype"),
    (ServerRuntimeError, ("raises", "negative", "o"), "negative input is not allowed"),
    (ServerRuntimeError, ("greedy", "xf", "o"), "out of memory"),
]
for exc_type, args, match in cases:
    text = raises(exc_type, c.run_model, *args, match=match)
    print(f"  run_model{args}: {exc_type.__name__}: {text[:150]}")
    c.run_model("affine", "xf", "y_ok")
    assert np.allclose(c.get_tensor("y_ok"), want, **TOL)
raises(KeyNotFoundError, c.run_script, "no_such_script", "double", ka, "o", match="does not exist")
raises(KeyNotFoundError, c.run_script, "src", "no_such_fn", ka, "o", match="no_such_fn")
raises(BadArgumentError, c.run_script, "src", "double", [ka, kb], "o", match="takes 1 inputs")
raises(BadArgumentError, c.set_script, "broken", "def f(x: Tensor) -> Tensor:\n    return x +\n",
       match="does not compile")
raises(BadArgumentError, c.set_model, "junk", b"this is not a TorchScript archive", match="TorchScript")
raises(BadArgumentError, c.set_model, "tf", b"x", backend="TF", match="convert the TensorFlow model to ONNX")
raises(BadArgumentError, c.set_model, "dev", affine, device="TPU", match="CPU or GPU")
raises(BadArgumentError, c.set_model, "mb", affine, min_batch_size=4, match="batch_size must be non-zero")
raises(KeyNotFoundError, c.delete_model, "no_such_model")
raises(KeyNotFoundError, c.get_model, "no_such_model")
raises(KeyNotFoundError, c.get_script, "no_such_script")
async_err = c.run_model_async("raises", "negative", "o")
raises(ServerRuntimeError, async_err.wait, match="negative")
raises(ServerRuntimeError, async_err.wait, match="negative")  # the same error again
assert not c.model_exists("junk")
check("errors: unknown model/script/function/input, arity, outputs, shape, dtype, raise, OOM, "
      "bad archive/source/backend/device; the server keeps serving")

# ---------------------------------------------------------------- delete, statistics
c.delete_model("greedy")
assert not c.model_exists("greedy") and not c.poll_model("greedy", 5, 2)
raises(KeyNotFoundError, c.run_model, "greedy", "xf", "o", match="does not exist")
c.delete_script("src_file")
raises(KeyNotFoundError, c.run_script, "src_file", "double", ka, "o", match="does not exist")
c.run_model("affine", "xf", "y_after")
check("delete_model, delete_script")

info = c.get_server_info()
home = info[shard_of("xf", S)]["engine"]
st = home["models"]["affine"]
assert st["requests"] >= 10 and st["batches"] >= 1 and st["rows"] == 5 * st["requests"], st
assert st["errors"] >= 2 and st["compute_s"] > 0 and "mean_queue_wait_ms" in st, st
raises_stats = info[shard_of("negative", S)]["engine"]["models"]["raises"]
assert raises_stats["errors"] == 2, raises_stats
assert home["scripts"]["src"]["requests"] >= 1
assert all(i["client_jobs"] == 1 for i in info)
print("  affine on its home shard:", {k: st[k] for k in ("requests", "batches", "rows", "errors",
                                                          "mean_batch_size", "mean_compute_ms")})
check("engine statistics in get_server_info")
print("engine_api: all checks passed")
