"""Thousands of mixed put/get/unpack/delete/copy/rename operations per client; every value read
back is checked against what this client last wrote; at the end each client checks the others'."""

import os
import sys

import numpy as np

import mpistage
from mpistage import Client

OPS = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
comm = mpistage.app_comm()
rank, size = comm.Get_rank(), comm.Get_size()
rng = np.random.default_rng(1000 + rank)
c = Client()
expected: dict[str, np.ndarray] = {}
DTYPES = [np.float32, np.float64, np.int16, np.int64, np.uint8]
counts = dict.fromkeys(["put", "get", "unpack", "delete", "copy", "rename", "missing"], 0)


job = comm.bcast(os.getpid())  # jobs running at once keep apart


def key(i: int) -> str:
    return f"soak.{job}.{rank}.{i}"


def fresh() -> np.ndarray:
    n = int(rng.choice([1, 7, 100, 3000, 70_000]))
    dt = DTYPES[int(rng.integers(len(DTYPES)))]
    a = (rng.random(n) * 100).astype(dt)
    return a.reshape(-1, 1) if rng.random() < 0.3 else a


for _ in range(OPS):
    k = key(int(rng.integers(40)))
    op = rng.random()
    if op < 0.35 or not expected:
        expected[k] = fresh()
        c.put_tensor(k, expected[k])
        counts["put"] += 1
    elif op < 0.6:
        if k in expected:
            assert np.array_equal(c.get_tensor(k), expected[k]), k
            counts["get"] += 1
        else:
            assert not c.tensor_exists(k)
            counts["missing"] += 1
    elif op < 0.7 and k in expected:
        out = np.empty_like(expected[k])
        c.unpack_tensor(k, out)
        assert np.array_equal(out, expected[k])
        counts["unpack"] += 1
    elif op < 0.8 and k in expected:
        c.delete_tensor(k)
        del expected[k]
        counts["delete"] += 1
    elif op < 0.9 and k in expected:
        dst = key(int(rng.integers(40)))
        c.copy_tensor(k, dst)
        expected[dst] = expected[k]
        counts["copy"] += 1
    elif k in expected:
        dst = key(int(rng.integers(40)))
        c.rename_tensor(k, dst)
        expected[dst] = expected.pop(k)
        counts["rename"] += 1

for k, v in expected.items():
    assert np.array_equal(c.get_tensor(k), v), k
# publish a checksum per key, then check every other client's keys
sums = {k: float(v.astype(np.float64).sum()) for k, v in expected.items()}
everyone = comm.allgather(sums)
for other, table in enumerate(everyone):
    for k, s in table.items():
        assert float(c.get_tensor(k).astype(np.float64).sum()) == s, (other, k)
total = comm.allreduce(sum(counts.values()))
print(f"rank {rank}: soak OK {counts}; all ranks {total} operations", flush=True)
