"""A connection file whose shard count does not match the servers: a clear error (issue 7, 6d).
Run as a job of its own with MPISTAGE_ADDRESS naming the wrong file; a later job must still
connect (the test does that)."""

import mpistage
from mpistage import Client

try:
    Client()
    raise AssertionError("connected although the connection file's shard count is wrong")
except mpistage.ServerUnreachableError as exc:
    assert "server ranks" in str(exc), exc
    print(f"ServerUnreachableError: {exc}", flush=True)
print("wrong shards OK", flush=True)
