"""set_model / set_script are all or nothing over the shards (issue 7, 6e). Two shards, MPMD.

A model that loads on one shard and fails on the other leaves the name on no shard; a model that
fails everywhere changes nothing. The per-shard case goes through the MPI backend's own
every-shard step with a different payload per shard (the public API sends one payload to all)."""

import io

import numpy as np
import torch
from torch import nn

import mpistage
from mpistage import Client
from mpistage.protocol import Kind, Op
from mpistage.router import shard_of

c = Client()
S = c.nshards
assert S == 2, S


class Double(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * x


buf = io.BytesIO()
torch.jit.save(torch.jit.script(Double()), buf)
good = buf.getvalue()
inputs = [next(f"in{i}" for i in range(1000) if shard_of(f"in{i}", S) == s) for s in range(S)]
for key in inputs:
    c.put_tensor(key, np.ones(4, np.float32))


def shards_with(model: str) -> list[int]:
    """The shards on which ``model`` runs (a run goes to the shard of its input)."""
    found = []
    for s, key in enumerate(inputs):
        try:
            c.run_model(model, key, f"out.{key}")
            found.append(s)
        except mpistage.KeyNotFoundError:
            pass
    return found


c.set_model("m", good)
assert shards_with("m") == [0, 1]

# fails on shard 1 only: removed from every shard, the first error raised
engine = c._backend.engine
fields = [b"m", b"TORCH", b"CPU", b"", *([bytes(8)] * 3)]
per_shard = [(fields, [np.frombuffer(good, np.uint8)]), (fields, [np.frombuffer(b"not a model", np.uint8)])]
try:
    engine._set_everywhere(Op.SET_MODEL, Kind.MODEL, "m", per_shard)
    raise AssertionError("a model that failed on one shard was accepted")
except mpistage.BadArgumentError as exc:
    print(f"partial failure: BadArgumentError: {exc}", flush=True)
assert shards_with("m") == [], shards_with("m")
assert not c.model_exists("m")
print("partial failure removes the name from every shard", flush=True)

# fails everywhere: nothing changes (the old version stays on every shard)
c.set_model("m", good)
try:
    c.set_model("m", b"not a model")
    raise AssertionError("bytes that are not TorchScript were accepted")
except mpistage.BadArgumentError:
    pass
assert shards_with("m") == [0, 1]

# scripts: the same step
c.set_script("s", "def f(x):\n    return x + 1\n")
try:
    c.set_script("s2", "def f(x):\n    return x +\n")
    raise AssertionError("a script that does not compile was accepted")
except mpistage.BadArgumentError:
    pass
c.run_script("s", "f", inputs[0], "s.out")
assert np.array_equal(c.get_tensor("s.out"), np.full(4, 2, np.float32))
print("all or nothing OK", flush=True)
