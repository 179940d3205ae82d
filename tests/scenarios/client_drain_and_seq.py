"""A reply payload left unread after an error must not poison a later request, and a request id
must not be reused while its request is in flight (issue 7, 6a). One shard, one client, MPMD.

``unpack_tensor`` of a 1 MiB tensor into an array of the wrong shape raises BadArgumentError, and
an async run is started and held; then every request id comes round (the stale payload's id
first, the run's last), after which ``get_tensor`` still works and the held run completes with
the right result."""

import numpy as np
import torch
from torch import nn

import mpistage
from mpistage import Client
from mpistage._mpi.process import get_connection
from mpistage.protocol import SEQ_MAX, SEQ_MIN, Kind, Op

SPAN = SEQ_MAX - SEQ_MIN + 1  # how many request ids there are
BATCH = 64
c = Client()
conn = get_connection()
assert c.nshards == 1


class Double(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * x


big = np.random.default_rng(0).random(1 << 17)  # 1 MiB: point-to-point, not inline
c.put_tensor("big", big)
try:
    c.unpack_tensor("big", np.empty(5))
    raise AssertionError("unpack_tensor accepted an array of the wrong shape")
except mpistage.BadArgumentError:
    pass

c.set_model("double", Double())
x = np.arange(12, dtype=np.float32).reshape(3, 4)
c.put_tensor("x", x)
handle = c.run_model_async("double", "x", "y")

# Every request id comes round: SPAN - 1 requests through the connection, 64 at a time, then the
# next ones through the public API; the first of those would get the held run's id if ids were
# reused while in flight (and would read the run's reply as its own).
exists = [bytes([Kind.TENSOR]), b"big"]
left = SPAN - 1
while left:
    pending = [conn.start(0, Op.EXISTS, exists) for _ in range(min(BATCH, left))]
    left -= len(pending)
    for p in pending:
        conn.finish(p)
for _ in range(200):
    assert c.tensor_exists("big") and not c.tensor_exists("nothing")

assert np.array_equal(c.get_tensor("big"), big)
print(f"drain OK: get_tensor works {SPAN + 400} requests after a failed unpack", flush=True)
assert handle.done()
handle.wait(timeout=60)
assert np.array_equal(c.get_tensor("y"), 2 * x)
print(f"seq OK: an async run held across {SPAN + 400} requests completed", flush=True)
