"""A bystander job: put/get round trips (inline, point-to-point and, in connect mode, one-sided
sizes), each value checked, until the file named by its argument exists; then it prints how many
it did, the worst round trip and the links the shards dropped. Exits non-zero on a wrong value."""

import sys
import time
from pathlib import Path

import numpy as np

from mpistage import Client

stop = Path(sys.argv[1])
c = Client()
rng = np.random.default_rng(7)
sizes = [1, 8000, 40000]  # 8 B inline, 64 KiB point-to-point, 320 KiB one-sided (connect mode)
n, worst = 0, 0.0
t_start = time.monotonic()
while n < 3 or not stop.exists():
    x = rng.random(sizes[n % len(sizes)])
    key = f"bystander.{n % 16}"
    t0 = time.perf_counter()
    c.put_tensor(key, x)
    got = c.get_tensor(key)
    dt = time.perf_counter() - t0
    if not np.array_equal(got, x):
        raise SystemExit(f"bystander: wrong value for {key} at round trip {n}")
    worst = max(worst, dt)
    n += 1
    time.sleep(0.002)
info = c.get_server_info()
dropped = sum(s.get("dropped_links", 0) for s in info)
print(f"bystander OK round_trips={n} worst_ms={worst * 1e3:.1f} seconds={time.monotonic() - t_start:.1f} "
      f"dropped_links={dropped} shards={len(info)}", flush=True)
