"""A reply payload left unread after an error must not poison a later request, and a request id
must not be reused while its request is in flight (issue 7, 6a). One shard, one client, MPMD.

1. ``unpack_tensor`` of a 1 MiB tensor into an array of the wrong shape raises BadArgumentError;
   more than 32k requests later (every request id has come round) ``get_tensor`` still works.
2. An async run is held across a full wrap of the request ids, then completes with the right
   result, and the requests in between got their own replies."""

import numpy as np
import torch
from torch import nn

import mpistage
from mpistage import Client
from mpistage.protocol import SEQ_MAX, SEQ_MIN

WRAP = SEQ_MAX - SEQ_MIN + 100
c = Client()

big = np.random.default_rng(0).random(1 << 17)  # 1 MiB: point-to-point, not inline
c.put_tensor("big", big)
try:
    c.unpack_tensor("big", np.empty(5))
    raise AssertionError("unpack_tensor accepted an array of the wrong shape")
except mpistage.BadArgumentError:
    pass
for _ in range(WRAP):
    assert c.tensor_exists("big")
assert np.array_equal(c.get_tensor("big"), big)
print(f"drain OK: get_tensor works {WRAP} requests after a failed unpack", flush=True)


class Double(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * x


c.set_model("double", Double())
x = np.arange(12, dtype=np.float32).reshape(3, 4)
c.put_tensor("x", x)
handle = c.run_model_async("double", "x", "y")
for _ in range(WRAP):
    assert c.tensor_exists("x") and not c.tensor_exists("nothing")
assert handle.done()
handle.wait()
assert np.array_equal(c.get_tensor("y"), 2 * x)
print(f"seq OK: an async run held across {2 * WRAP} requests completed", flush=True)
