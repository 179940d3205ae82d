"""One soak client (connect mode): mixed operations until its deadline, every value read back
checked; it may be SIGKILLed at any moment by the driver (scaling/soak.py) and started again.

Each confirmed put is journaled (``JOURNAL`` file: ``put key crc`` / ``del key`` lines, flushed
before the next operation); a new incarnation of the same worker first reads back every key the
journal says is stored (a killed worker's values must survive it). Keys are never reused, so an
operation cut short by a kill cannot change a journaled value.

Operations: tensors (inline, point-to-point and one-sided sizes), datasets appended to a list,
the list's length, a TorchScript model run (y = 2x + 1) and a script run, engine faults (a script
function that raises, a model run on a wrong input, a missing model), deletes, and (worker 0)
snapshots. Prints ``soak worker stats {json}`` at the end.

Arguments: worker id, seconds, journal path, model file.
"""

import json
import os
import sys
import time
import zlib
from pathlib import Path

import numpy as np

import mpistage
from mpistage import Client, Dataset

worker, seconds, journal_path, model_file = int(sys.argv[1]), float(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
incarnation = os.getpid()
rng = np.random.default_rng(incarnation)
c = Client()
stats = {"worker": worker, "operations": 0, "verified": 0, "lost": 0, "wrong": 0, "engine_faults": 0,
         "saves": 0, "worst_ms": 0.0, "worst_op": "", "recovered_checked": 0}
KEEP = 40  # journaled tensors a worker keeps: older ones are deleted, so the store stays bounded
LIST_ROUND = 100  # a worker's list is deleted and started again at this length
SCRIPT = "def affine(x):\n    return 2 * x + 1\n\ndef broken(x):\n    return x.reshape(7, 7, 7, 1000)\n"


def crc(a: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(a).tobytes()) ^ zlib.crc32(str((a.dtype.str, a.shape)).encode())


def timed(fn, *args):  # noqa: ANN001, ANN202
    t0 = time.perf_counter()
    out = fn(*args)
    ms = (time.perf_counter() - t0) * 1e3
    if ms > stats["worst_ms"]:
        stats["worst_ms"], stats["worst_op"] = ms, getattr(fn, "__name__", "call")
    stats["operations"] += 1
    return out


def check(ok: bool, what: str) -> None:
    if ok:
        stats["verified"] += 1
    else:
        stats["wrong"] += 1
        print(f"soak worker {worker}: WRONG {what}", flush=True)


# a new incarnation: everything the journal says is stored must be there, bit for bit
stored: dict[str, int] = {}
if journal_path.exists():
    for line in journal_path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "put":
            stored[parts[1]] = int(parts[2])
        elif len(parts) == 2 and parts[0] in ("del", "deleting"):
            stored.pop(parts[1], None)
for key, want in stored.items():
    try:
        got = timed(c.get_tensor, key)
        check(crc(got) == want, f"recovered {key}")
    except mpistage.KeyNotFoundError:
        stats["lost"] += 1
        print(f"soak worker {worker}: LOST {key}", flush=True)
    stats["recovered_checked"] += 1
journal = journal_path.open("a")


def log(line: str) -> None:
    journal.write(line + "\n")
    journal.flush()


if worker == 0:
    c.set_model_from_file("soak.model", model_file, "TORCH", "CPU")
    c.set_script("soak.script", SCRIPT, "CPU")
else:
    while not (c.model_exists("soak.model") and c.model_exists("soak.script")):
        time.sleep(0.1)
deadline = time.monotonic() + seconds
n = 0
last_save = time.monotonic()
list_name, list_length = f"soak.list.{worker}.{incarnation}", 0
while time.monotonic() < deadline:
    n += 1
    key = f"soak.{worker}.{incarnation}.{n}"
    roll = rng.random()
    if roll < 0.45:  # tensors: inline, point-to-point, one-sided
        size = int(rng.choice([3, 8000, 40000, 130_000]))
        x = rng.random(size).astype(rng.choice([np.float32, np.float64]))
        timed(c.put_tensor, key, x)
        log(f"put {key} {crc(x)}")
        stored[key] = crc(x)
        check(np.array_equal(timed(c.get_tensor, key), x), key)
    elif roll < 0.6:  # a dataset, appended to this worker's list
        ds = Dataset(key)
        ds.add_tensor("u", rng.random((16, 9)))
        ds.add_tensor("v", np.asfortranarray(rng.integers(0, 99, (5, 7), dtype=np.int32)))
        ds.add_meta_scalar("step", n)
        timed(c.put_dataset, ds)
        timed(c.append_to_list, list_name, ds)
        list_length += 1
        got = timed(c.get_dataset, key)
        check(all(np.array_equal(got.get_tensor(t), ds.get_tensor(t)) for t in ("u", "v")), key)
        check(timed(c.get_list_length, list_name) == list_length, list_name)
        timed(c.delete_dataset, key)
        if list_length >= LIST_ROUND:
            timed(c.delete_list, list_name)
            list_length = 0
    elif roll < 0.75:  # the model and the script
        x = rng.random((4, 3)).astype(np.float32)
        timed(c.put_tensor, key + ".in", x)
        if rng.random() < 0.5:
            timed(c.run_model, "soak.model", [key + ".in"], [key + ".out"])
        else:
            timed(c.run_script, "soak.script", "affine", [key + ".in"], [key + ".out"])
        check(np.allclose(timed(c.get_tensor, key + ".out"), 2 * x + 1), key + ".out")
        timed(c.delete_tensor, key + ".in")
        timed(c.delete_tensor, key + ".out")
    elif roll < 0.82:  # engine faults: each fails for this caller only
        bad, out = key + ".bad", key + ".o"
        timed(c.put_tensor, bad, rng.random(10).astype(np.float32))
        for call, args in ((c.run_script, ("soak.script", "broken", [bad], [out])),
                           (c.run_model, ("soak.model", [bad], [out])),
                           (c.run_model, ("soak.no-such-model", [bad], [out]))):
            try:
                timed(call, *args)
                stats["wrong"] += 1
                print(f"soak worker {worker}: an engine fault was not reported", flush=True)
            except mpistage.MpistageError:
                stats["engine_faults"] += 1
        timed(c.delete_tensor, key + ".bad")
    if len(stored) > KEEP or (roll >= 0.82 and stored):  # delete one of this worker's journaled tensors
        victims = list(stored)
        if victims:
            k = victims[0] if len(stored) > KEEP else victims[int(rng.integers(len(victims)))]
            log(f"deleting {k}")
            timed(c.delete_tensor, k)
            stored.pop(k)
            log(f"del {k}")
            check(not timed(c.tensor_exists, k), f"deleted {k}")
    if worker == 0 and time.monotonic() - last_save > 10:
        timed(c.save)
        stats["saves"] += 1
        last_save = time.monotonic()
print("soak worker stats " + json.dumps(stats), flush=True)
