"""What a small key really costs a shard, against what the cap's accounting counts.

Run as the client of one shard (``mpistage launch --servers 1 -n 1 -- python scaling/key_overhead.py
[N]``): puts N 8-byte tensors under distinct keys, then compares the growth of the shard's resident
memory (INFO ``rss_bytes``) with the growth of its ``bytes_used``; prints both per key and their
ratio, and writes ``scaling/results/key_overhead.json``.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np

from mpistage import Client

n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
c = Client()
x = np.ones(1)
c.put_tensor("warm", x)
before = c.get_server_info()[0]
t0 = time.monotonic()
for i in range(n):
    c.put_tensor(f"field.{i:07d}", x)
seconds = time.monotonic() - t0
after = c.get_server_info()[0]
grew = after["rss_bytes"] - before["rss_bytes"]
counted = after["bytes_used"] - before["bytes_used"]
result = {"keys": n, "rss_grew_bytes": grew, "counted_bytes": counted, "per_key_real": grew / n,
          "per_key_counted": counted / n, "counted_over_real": counted / grew, "seconds": round(seconds, 1)}
print(f"{n} keys of 8 bytes: shard grew {grew / 2**20:.1f} MiB ({grew / n:.0f} B/key), the cap counts "
      f"{counted / 2**20:.1f} MiB ({counted / n:.0f} B/key): counted/real = {counted / grew:.3f} ({seconds:.0f} s)")
out = Path(__file__).resolve().parent / "results" / "key_overhead.json"
out.parent.mkdir(exist_ok=True)
out.write_text(json.dumps(result, indent=1))
