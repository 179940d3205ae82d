"""What a small key really costs a shard, against what the cap's accounting counts.

Run as the client of one shard (``mpistage launch --servers 1 -n R -- python scaling/key_overhead.py
[N]``): the R client ranks together put N 8-byte tensors under distinct keys (several ranks keep
the shard busy while each waits for its replies), then rank 0 compares the growth of the shard's
resident memory (INFO ``rss_bytes``) with the growth of its ``bytes_used``; prints both per key and
their ratio, and writes ``scaling/results/key_overhead.json``.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np

from mpistage import Client, app_comm

n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
comm = app_comm()
rank, size = comm.Get_rank(), comm.Get_size()
c = Client()
x = np.ones(1)
c.put_tensor(f"warm.{rank}", x)
comm.Barrier()
before = c.get_server_info()[0] if rank == 0 else None
comm.Barrier()
t0 = time.monotonic()
mine = range(rank, n, size)
for j, i in enumerate(mine):
    c.put_tensor(f"field.{i:07d}", x)
    if rank == 0 and j and j % 100_000 == 0:
        print(f"{j * size} keys put ({time.monotonic() - t0:.0f} s)", flush=True)
comm.Barrier()
seconds = time.monotonic() - t0
if rank == 0:
    after = c.get_server_info()[0]
    grew = after["rss_bytes"] - before["rss_bytes"]
    counted = after["bytes_used"] - before["bytes_used"]
    result = {"keys": n, "client_ranks": size, "rss_grew_bytes": grew, "counted_bytes": counted,
              "per_key_real": grew / n, "per_key_counted": counted / n, "counted_over_real": counted / grew,
              "seconds": round(seconds, 1)}
    print(f"{n} keys of 8 bytes: shard grew {grew / 2**20:.1f} MiB ({grew / n:.0f} B/key), the cap counts "
          f"{counted / 2**20:.1f} MiB ({counted / n:.0f} B/key): counted/real = {counted / grew:.3f} "
          f"({seconds:.0f} s, {size} client ranks)")
    out = Path(__file__).resolve().parent / "results" / "key_overhead.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
