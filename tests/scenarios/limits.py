"""Limits under real mpiexec (one shard, one client rank). ``cap`` (server --max-memory 64M): a
256 MiB put against a nearly full store is refused before its payload lands (the shard's memory
barely moves) and what was stored stays intact. ``chunks`` (MPISTAGE_MESSAGE_BYTES small): tensors
and datasets whose parts travel as several messages round-trip exactly, and a list refuses its
4097th name with a clear error."""

import sys

import numpy as np

import mpistage
from mpistage import Client, Dataset

c = Client()
mode = sys.argv[1]
rng = np.random.default_rng(3)

if mode == "cap":
    kept = {f"fill.{i}": rng.random(1_250_000) for i in range(5)}  # 50 MB of the 64 MiB
    for k, v in kept.items():
        c.put_tensor(k, v)
    before = c.get_server_info()[0]["rss_bytes"]
    huge = np.ones(32 << 20)  # 256 MiB
    try:
        c.put_tensor("huge", huge)
        raise AssertionError("a 256 MiB put was accepted by a 64 MiB store")
    except mpistage.StoreFullError as exc:
        print(f"refused: {exc}", flush=True)
    info = c.get_server_info()[0]
    print(f"rss grew {info['rss_bytes'] - before} bytes; bytes_used {info['bytes_used']} of {info['max_bytes']}",
          flush=True)
    assert all(np.array_equal(c.get_tensor(k), v) for k, v in kept.items()) and not c.tensor_exists("huge")
    print("limits cap OK", flush=True)
elif mode == "chunks":
    x = rng.random(700_000)  # 5.6 MB: 56 messages of 100 kB each way
    c.put_tensor("chunked", x)
    assert np.array_equal(c.get_tensor("chunked"), x)
    ds = Dataset("chunked.ds")
    ds.add_tensor("a", rng.random((300, 200)))
    ds.add_tensor("b", np.asfortranarray(rng.integers(0, 9, (50, 4000), dtype=np.int32)))
    c.put_dataset(ds)
    got = c.get_dataset("chunked.ds")
    assert all(np.array_equal(got.get_tensor(n), ds.get_tensor(n)) for n in ("a", "b"))
    for _ in range(4096):
        c.append_to_list("long", ds)
    try:
        c.append_to_list("long", ds)
        raise AssertionError("a list took a 4097th name")
    except mpistage.BadArgumentError as exc:
        print(f"refused: {exc}", flush=True)
    assert c.get_list_length("long") == 4096
    assert len(c.get_dataset_list_range("long", 4090, -1)) == 6
    print("limits chunks OK", flush=True)
