"""Every dtype, rank 0-5, C/Fortran/non-contiguous/zero-size arrays, and the SmartRedis tensor,
dataset and list calls, each checked against what was put. Works in every mode."""

import os
import sys

import numpy as np

import mpistage
from mpistage import Client, Dataset, KeyNotFoundError

DTYPES = ["float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16"]
c = Client()
c2 = Client()  # a second Client in one process shares the connection
rank = mpistage.app_comm().Get_rank() if "--no-comm" not in sys.argv else 0
rng = np.random.default_rng(rank)
p = f"r{rank}.{os.getpid()}"
checked = 0


def same(a: np.ndarray, b: np.ndarray) -> None:
    global checked
    assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, a.shape, b.dtype, b.shape)
    assert np.array_equal(a, b), (a, b)
    checked += 1


for dt in DTYPES:
    for shape in [(), (7,), (3, 4), (2, 3, 4), (2, 1, 3, 2), (1, 2, 1, 2, 3)]:
        a = np.asarray(rng.random(shape) * 100).astype(dt)
        c.put_tensor(f"{p}.{dt}.{len(shape)}", a)
        same(a, c2.get_tensor(f"{p}.{dt}.{len(shape)}"))
    f = np.asfortranarray((rng.random((5, 6)) * 50).astype(dt))
    c.put_tensor(f"{p}.F.{dt}", f)
    g = c.get_tensor(f"{p}.F.{dt}")
    same(f, g)
    assert g[2, 3] == f[2, 3]
    out = np.empty((5, 6), dt)  # C-ordered target for an F-ordered tensor
    c.unpack_tensor(f"{p}.F.{dt}", out)
    same(f, out)
    nc = (rng.random((10, 12)) * 9).astype(dt)[::3, 1::2]
    c.put_tensor(f"{p}.NC.{dt}", nc)
    same(np.ascontiguousarray(nc), c.get_tensor(f"{p}.NC.{dt}"))
    z = np.zeros((0, 4), dt)
    c.put_tensor(f"{p}.Z.{dt}", z)
    same(z, c.get_tensor(f"{p}.Z.{dt}"))
big = rng.random(3 << 17)  # 3 MiB: one-sided in connect mode
c.put_tensor(f"{p}.big", big)
same(big, c.get_tensor(f"{p}.big"))
out = np.empty_like(big)
c.unpack_tensor(f"{p}.big", out)
same(big, out)

# unpack_tensor checks shape and dtype
for bad in (np.empty(5, np.float64), np.empty(big.shape, np.float32)):
    try:
        c.unpack_tensor(f"{p}.big", bad)
        raise AssertionError("unpack_tensor accepted a mismatched array")
    except mpistage.BadArgumentError as exc:
        assert "result array" in str(exc)

# tensor key operations, across shards too
a = np.arange(10, dtype=np.int32)
c.put_tensor(f"{p}.src", a)
for i in range(6):
    c.copy_tensor(f"{p}.src", f"{p}.copy{i}")
    same(a, c.get_tensor(f"{p}.copy{i}"))
    c.rename_tensor(f"{p}.copy{i}", f"{p}.moved{i}")
    assert not c.tensor_exists(f"{p}.copy{i}") and c.tensor_exists(f"{p}.moved{i}")
    same(a, c.get_tensor(f"{p}.moved{i}"))
    c.delete_tensor(f"{p}.moved{i}")
    assert not c.tensor_exists(f"{p}.moved{i}")
assert c.key_exists(f"{p}.src") and not c.key_exists(f"{p}.nothing")
assert c.poll_tensor(f"{p}.src", 10, 3) and not c.poll_key(f"{p}.nothing", 10, 3)
c.delete_tensor(f"{p}.nothing")  # as SmartRedis (Redis DEL): deleting a missing key is a no-op
for call in (lambda: c.get_tensor(f"{p}.nothing"), lambda: c.copy_tensor(f"{p}.nothing", f"{p}.x")):
    try:
        call()
        raise AssertionError("missing key accepted")
    except KeyNotFoundError as exc:
        assert "does not exist" in str(exc)

# datasets
ds = Dataset(f"{p}.ds")
ds.add_tensor("u", rng.random((4, 5)).astype(np.float32))
ds.add_tensor("v", np.asfortranarray(rng.integers(0, 9, (3, 2))))
ds.add_tensor("empty", np.zeros(0, np.int8))
ds.add_meta_scalar("time", 1.5)
ds.add_meta_scalar("time", 2.5)
ds.add_meta_scalar("step", np.int32(7))
ds.add_meta_string("units", "m/s")
ds.add_meta_string("units", "K")
c.put_dataset(ds)
back = c.get_dataset(f"{p}.ds")
assert back.get_tensor_names() == ["u", "v", "empty"]
for t in ds.get_tensor_names():
    same(ds.get_tensor(t), back.get_tensor(t))
same(np.array([1.5, 2.5]), back.get_meta_scalars("time"))
same(np.array([7], np.int32), back.get_meta_scalars("step"))
assert back.get_meta_strings("units") == ["m/s", "K"]
assert sorted(back.get_metadata_field_names()) == ["step", "time", "units"]
for i in range(4):
    c.copy_dataset(f"{p}.ds", f"{p}.dscopy{i}")
    c.rename_dataset(f"{p}.dscopy{i}", f"{p}.dsmoved{i}")
    assert c.dataset_exists(f"{p}.dsmoved{i}") and not c.dataset_exists(f"{p}.dscopy{i}")
    same(ds.get_tensor("u"), c.get_dataset(f"{p}.dsmoved{i}").get_tensor("u"))
    c.delete_dataset(f"{p}.dsmoved{i}")
assert c.poll_dataset(f"{p}.ds", 5, 2) and not c.dataset_exists(f"{p}.dsmoved0")

# aggregation lists
lst = f"{p}.list"
for i in range(5):
    d = Dataset(f"{p}.item{i}")
    d.add_tensor("x", np.full(3, i, np.int64))
    c.put_dataset(d)
    c.append_to_list(lst, d)
assert c.get_list_length(lst) == 5 and c.get_list_length(f"{p}.nolist") == 0
assert c.poll_list_length(lst, 5, 5, 2) and c.poll_list_length_gte(lst, 4, 5, 2)
assert c.poll_list_length_lte(lst, 5, 5, 2) and not c.poll_list_length_gte(lst, 6, 5, 2)
items = c.get_datasets_from_list(lst)
assert [d.get_name() for d in items] == [f"{p}.item{i}" for i in range(5)]
same(np.full(3, 3, np.int64), items[3].get_tensor("x"))
assert [d.get_name() for d in c.get_dataset_list_range(lst, 1, 2)] == [f"{p}.item1", f"{p}.item2"]
assert [d.get_name() for d in c.get_dataset_list_range(lst, -2, -1)] == [f"{p}.item3", f"{p}.item4"]
for i in range(4):
    c.copy_list(lst, f"{p}.list{i}")
    assert c.get_list_length(f"{p}.list{i}") == 5
    c.rename_list(f"{p}.list{i}", f"{p}.listm{i}")
    assert c.get_list_length(f"{p}.list{i}") == 0 and c.get_list_length(f"{p}.listm{i}") == 5
    c.delete_list(f"{p}.listm{i}")
    assert c.get_list_length(f"{p}.listm{i}") == 0

info = c.get_server_info()
assert len(info) == c.nshards and all(s["requests"] > 0 for s in info)
assert sum(s["keys"] for s in info) > 0 and all("bytes_used" in s for s in info)
print(f"rank {rank}: roundtrip OK, {checked} arrays checked, {c.nshards} shards", flush=True)
