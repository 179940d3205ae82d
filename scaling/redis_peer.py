"""Redis as the peer in bench_staging's run: a throw-away ``redis-server`` on loopback and put/get
latency through redis-py at the same sizes, as the same JSON records (``system="redis"``).

A put is ``set(key, arr.tobytes())``, a get is ``get(key)`` then ``np.frombuffer``; one client, no
pipelining (one round trip per operation, like a mpistage put or get).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping

import numpy as np
from common import summarize


def unavailable() -> str | None:
    """Why Redis cannot be measured here (one line), or None when it can."""
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (apt-get install redis-server)"
    try:
        import redis  # noqa: F401
    except ImportError:
        return "redis-py is missing (pip install 'mpistage[bench]')"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def redis_server(timeout: float = 30) -> Iterator[int]:
    """Run a private ``redis-server`` (loopback, free port, no persistence, temp dir); yield its
    port; the server is killed on exit, also on error or interrupt."""
    import redis

    with tempfile.TemporaryDirectory(prefix="bench-redis-") as tmp:
        port = _free_port()
        proc = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                                 "--appendonly", "no", "--dir", tmp, "--protected-mode", "yes"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    redis.Redis(port=port).ping()
                    break
                except redis.ConnectionError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"redis-server did not start on port {port}") from None
                    time.sleep(0.05)
            yield port
        finally:
            proc.kill()
            proc.wait(timeout=30)


def measure(port: int, sizes: Mapping[str, int], iterations) -> list[dict]:
    """put/get records at each size; ``iterations(nbytes)`` is the op count (3 warm-up ops more)."""
    import redis

    r = redis.Redis(port=port)
    records = []
    for label, n in sizes.items():
        data = np.ones(n, np.uint8)
        key = f"bench.redis.{label}"
        k = iterations(n)
        for op, call in (("put", lambda key=key, data=data: r.set(key, data.tobytes())),
                         ("get", lambda key=key: np.frombuffer(r.get(key), np.uint8))):
            times = np.empty(k)
            for i in range(k + 3):
                t0 = time.perf_counter()
                call()
                if i >= 3:
                    times[i - 3] = time.perf_counter() - t0
            records.append({"operation": op, "size": label, "bytes": n, **summarize(times, n)})
        r.delete(key)
    r.close()
    return records
