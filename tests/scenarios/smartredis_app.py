"""A SmartRedis program whose only change is its import (``smartredis`` -> ``mpistage.smartredis``),
plus the key-space semantics SmartRedis programs rely on, typed metadata, server settings
(config_get/config_set) and flush_db; run against real servers (connect mode
with SSDB naming the connection file, or MPMD). Prints SMARTREDIS APP OK. Arg: another connection
file (connect mode), which a second Client must refuse."""

import io
import os
import sys
import warnings

import numpy as np
import torch

from mpistage.router import shard_of
from mpistage.smartredis import Client, Dataset, LLInfo
from mpistage.smartredis.error import RedisBadAllocError, RedisConnectionError, RedisKeyError, RedisReplyError


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

# metadata scalars of SmartRedis's six types through the servers' metadata codec
ds = Dataset("typed")
for dtype in (np.float64, np.float32, np.int32, np.int64, np.uint32, np.uint64):
    ds.add_meta_scalar(np.dtype(dtype).name, dtype(np.iinfo(np.uint32).max if dtype == np.uint32 else 7))
ds.add_meta_scalar("uint64", np.uint64(2**64 - 1))
client.put_dataset(ds)
typed = client.get_dataset("typed")
for dtype in (np.float64, np.float32, np.int32, np.int64, np.uint32, np.uint64):
    assert typed.get_metadata_field_type(np.dtype(dtype).name) is dtype
assert typed.get_meta_scalars("uint32").tolist() == [2**32 - 1]
assert typed.get_meta_scalars("uint64").tolist() == [7, 2**64 - 1]

# a per-call deadline (mpistage's keyword; SmartRedis has SR_MODEL_TIMEOUT only)
client.run_model("net", "t_float32_2", "plus1_timed", timeout=60.0)
assert np.array_equal(client.get_tensor("plus1_timed"), client.get_tensor("plus1"))

# server information and settings by address
nodes = client.get_db_node_info(["shard:0"])
assert len(nodes) == 1 and nodes[0]["shard"] == 0
everywhere = [os.environ["SSDB"]] if len(sys.argv) > 1 else ["shard:0"]
settings = client.config_get("*", "shard:0")
assert set(settings) == {"maxmemory", "model-timeout", "shards", "shard"}, settings
assert settings["maxmemory"] == "0" and settings["shards"] == str(client.nshards)
assert client.config_get("MAX*", "shard:0") == {"maxmemory": "0"} and client.config_get("nothing*", "shard:0") == {}
big = next(k for k in (f"big{i}" for i in range(100)) if shard_of(k, client.nshards) == 0)
client.config_set("maxmemory", "1mb", "shard:0")  # Redis's units: 1mb = 2**20 bytes
assert client.config_get("maxmemory", "shard:0") == {"maxmemory": str(2**20)}
try:
    client.put_tensor(big, np.zeros(2**18, np.float64))  # 2 MiB
    raise AssertionError("a put over the new memory cap was stored")
except RedisBadAllocError:
    pass
client.config_set("maxmemory", "0", everywhere[0])
client.put_tensor(big, np.zeros(2**18, np.float64))
client.config_set("model-timeout", "45000", everywhere[0])
assert all(client.config_get("model-timeout", f"shard:{s}") == {"model-timeout": "45000"}
           for s in range(client.nshards))
for name, value in (("shards", "3"), ("no-such-setting", "1"), ("maxmemory", "lots"), ("model-timeout", "0")):
    try:
        client.config_set(name, value, "shard:0")
        raise AssertionError(f"config_set({name!r}, {value!r}) was accepted")
    except RedisReplyError:
        pass

# flush_db: every key of every kind goes, models and scripts too (RedisAI's keys are Redis keys)
client.set_script("kept_until_flush", "def f(x):\n    return x\n")
client.flush_db(everywhere)
assert sum(n["keys"] for n in client.get_db_node_info(everywhere)) == 0
for gone in ("ds_0", "t_float32_2", "net", "kept_until_flush", "typed", big):
    assert not client.key_exists(gone), gone
assert client.get_list_length("snapshots") == 0 and not client.model_exists("net")
try:
    client.get_ai_info(["shard:0"], "net")
    raise AssertionError("a model survived flush_db")
except RedisKeyError:
    pass
client.put_tensor("after_flush", np.ones(3))  # the servers serve on
assert np.array_equal(client.get_tensor("after_flush"), np.ones(3))

if len(sys.argv) > 1:  # connect mode: SSDB stands for every shard; another file is refused
    assert len(client.get_db_node_info([os.environ["SSDB"]])) == client.nshards == 2
    try:
        Client(False, sys.argv[1])
        raise AssertionError("a second address shared the first connection")
    except RedisConnectionError as exc:
        assert "one connection per process" in str(exc)
print("SMARTREDIS APP OK", flush=True)
