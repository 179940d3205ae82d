"""A SmartRedis program whose only change is its import (``smartredis`` -> ``mpistage.smartredis``),
plus the key-space semantics SmartRedis programs rely on; run against real servers (connect mode
with SSDB naming the connection file, or MPMD). Prints SMARTREDIS APP OK. Arg: another connection
file (connect mode), which a second Client must refuse."""

import io
import sys
import warnings

import numpy as np
import torch

from mpistage.smartredis import Client, Dataset, LLInfo
from mpistage.smartredis.error import RedisConnectionError, RedisKeyError, RedisReplyError


def smooth(x: torch.Tensor) -> torch.Tensor:
    return x * 2.0


class Net(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 1.0


client = Client(cluster=False, logger_name="app")
client.log_data(LLInfo, "connected")

# tensors of every type and several ranks
for dtype in (np.float64, np.float32, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16):
    for shape in ((5,), (2, 3), (2, 3, 4)):
        a = np.arange(np.prod(shape)).reshape(shape).astype(dtype)
        client.put_tensor(f"t_{np.dtype(dtype).name}_{len(shape)}", a)
        back = client.get_tensor(f"t_{np.dtype(dtype).name}_{len(shape)}")
        assert back.dtype == dtype and np.array_equal(back, a)
out = np.empty((2, 3), np.float32)
client.unpack_tensor("t_float32_2", out)
assert np.array_equal(out, np.arange(6.0).reshape(2, 3))

# datasets and aggregation lists
for i in range(3):
    ds = Dataset(f"ds_{i}")
    ds.add_tensor("field", np.full((4, 4), i, np.float64))
    ds.add_meta_scalar("step", i)
    ds.add_meta_string("kind", "snapshot")
    client.put_dataset(ds)
    client.append_to_list("snapshots", ds)
assert client.poll_list_length("snapshots", 3, 10, 10)
got = client.get_datasets_from_list("snapshots")
assert [int(d.get_meta_scalars("step")[0]) for d in got] == [0, 1, 2]
assert got[1].get_tensor_dims("field") == [4, 4] and got[1].get_tensor_type("field") is np.float64

# scripts and models
client.set_function("smooth", smooth)
assert "def smooth" in client.get_script("smooth")  # the source that was set, as SmartRedis
client.run_script("smooth", "smooth", ["t_float32_2"], ["smoothed"])
assert np.array_equal(client.get_tensor("smoothed"), 2 * np.arange(6.0).reshape(2, 3))
buf = io.BytesIO()
torch.jit.save(torch.jit.script(Net()), buf)
client.set_model("net", buf.getvalue(), "TORCH", "CPU")
client.run_model("net", "t_float32_2", "plus1")
assert np.array_equal(client.get_tensor("plus1"), np.arange(6.0).reshape(2, 3) + 1)
client.set_model_multigpu("net_gpu", buf.getvalue(), "torch", 0, 1)  # a CPU server: CPU, with a warning
client.run_model_multigpu("net_gpu", 0, 0, 1, ["t_float32_2"], ["plus1_gpu"])
assert np.array_equal(client.get_tensor("plus1_gpu"), client.get_tensor("plus1"))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    client.set_model("batched", buf.getvalue(), "TORCH", "CPU", batch_size=4, min_batch_size=2)
assert any("min_batch_timeout" in str(w.message) for w in caught)
with_ai = client.get_ai_info(["shard:0"], "net")[0]
assert with_ai["type"] == "MODEL" and with_ai["device"] == "cpu"

# key-space semantics
client.delete_tensor("never_stored")
client.delete_dataset("never_stored")
client.delete_list("never_stored")
assert client.model_exists("smooth") and client.model_exists("net")  # scripts too
assert client.key_exists("net") and client.key_exists("smooth") and client.key_exists("ds_0")
assert client.poll_model("smooth", 10, 2)
client.delete_script("smooth")
assert not client.model_exists("smooth") and not client.key_exists("smooth")
try:
    client.get_tensor("never_stored")
    raise AssertionError("no error for a missing tensor")
except RedisKeyError:
    pass
try:
    client.set_model("bad", b"not torchscript", "TORCH", "CPU")
    raise AssertionError("no error for bytes that are not TorchScript")
except RedisReplyError:
    pass

# server information by address
nodes = client.get_db_node_info(["shard:0"])
assert len(nodes) == 1 and nodes[0]["shard"] == 0
if len(sys.argv) > 1:  # connect mode: SSDB stands for every shard; another file is refused
    import os

    assert len(client.get_db_node_info([os.environ["SSDB"]])) == client.nshards == 2
    try:
        Client(False, sys.argv[1])
        raise AssertionError("a second address shared the first connection")
    except RedisConnectionError as exc:
        assert "one connection per process" in str(exc)
print("SMARTREDIS APP OK", flush=True)
