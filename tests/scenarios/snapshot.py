"""``snapshot.py write`` stores tensors, datasets and lists (and calls client.save() with
``--save``); ``snapshot.py verify`` checks that a restored server holds them bit-exact."""

import sys

import numpy as np

from mpistage import Client, Dataset

phase = sys.argv[1]
c = Client()
rng = np.random.default_rng(42)
tensors = {
    "snap.f32": rng.random((3, 4)).astype(np.float32),
    "snap.f64F": np.asfortranarray(rng.random((5, 2))),
    "snap.i8": rng.integers(-100, 100, 17).astype(np.int8),
    "snap.u16": rng.integers(0, 60000, (2, 2, 2)).astype(np.uint16),
    "snap.zero": np.zeros((0, 3), np.int32),
    "snap.scalar": np.array(3.25),
    "{tag}.nan": np.array([np.nan, -0.0, np.inf]),
}
ds = Dataset("snap.ds")
ds.add_tensor("a", rng.random(6).astype(np.float32))
ds.add_meta_scalar("t", 0.5)
ds.add_meta_string("who", "ocean")
if phase == "write":
    for k, v in tensors.items():
        c.put_tensor(k, v)
    c.put_dataset(ds)
    for _ in range(3):
        c.append_to_list("snap.list", ds)
    if "--save" in sys.argv:
        files = c.save()
        assert len(files) == c.nshards, files
        print("saved", files, flush=True)
else:
    for k, v in tensors.items():
        got = c.get_tensor(k)
        assert got.dtype == v.dtype and got.shape == v.shape and got.tobytes("A") == v.tobytes("A"), k
        assert got.flags.f_contiguous == v.flags.f_contiguous or v.ndim < 2, k
    back = c.get_dataset("snap.ds")
    assert back.get_tensor("a").tobytes() == ds.get_tensor("a").tobytes()
    assert back.get_meta_scalars("t").tolist() == [0.5] and back.get_meta_strings("who") == ["ocean"]
    assert c.get_list_length("snap.list") == 3
    assert [d.get_name() for d in c.get_datasets_from_list("snap.list")] == ["snap.ds"] * 3
print(f"snapshot {phase} OK on {c.nshards} shards", flush=True)
