"""Deadlines of engine calls (server started with --model-timeout 3): an endless script fails its
caller with a timeout after SR_MODEL_TIMEOUT ms and the server goes on: a model runs right after,
a model queued behind a second endless call runs once its worker is replaced, a request queued
for a batch that never fills times out after the server's default, the store answers throughout.
One client rank, one server rank."""

import os
import time

import numpy as np
import torch

from mpistage import Client, ServerRuntimeError

ENDLESS = """
def spin(x):
    i = 0
    while i >= 0:
        x = x + 1.0
        i = (i + 1) % 1000
    return x
"""


class Double(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * x


c = Client()
c.set_script("endless", ENDLESS)
c.set_model("double", torch.jit.script(Double()))
c.set_model("never_full", torch.jit.script(Double()), batch_size=100, min_batch_size=100)  # waits for 100 rows
x = np.arange(6, dtype=np.float32).reshape(2, 3)
c.put_tensor("x", x)


def check(what: str) -> None:
    print("OK", what, flush=True)


def timed_out(fn, *args, within: tuple[float, float]) -> str:
    start = time.monotonic()
    try:
        fn(*args)
    except ServerRuntimeError as exc:
        took = time.monotonic() - start
        assert "timed out after" in str(exc), exc
        assert within[0] <= took <= within[1], (took, within, str(exc))
        print(f"timed out in {took:.2f} s: {exc}", flush=True)
        return str(exc)
    raise AssertionError(f"{fn.__name__}{args} did not time out")


os.environ["SR_MODEL_TIMEOUT"] = "1000"  # ms, as in SmartRedis: sent with each call
msg = timed_out(c.run_script, "endless", "spin", "x", "y", within=(0.9, 8.0))
assert "function 'spin' of script 'endless' timed out after 1 s" in msg, msg
check("an endless script fails its caller after SR_MODEL_TIMEOUT (1000 ms)")

start = time.monotonic()
c.run_model("double", "x", "x2")
np.testing.assert_array_equal(c.get_tensor("x2"), 2 * x)
print(f"next model call took {time.monotonic() - start:.2f} s", flush=True)
check("a later call runs on a new worker")

os.environ["SR_MODEL_TIMEOUT"] = "1000"
stuck = c.run_script_async("endless", "spin", "x", "y2")
time.sleep(0.2)
os.environ["SR_MODEL_TIMEOUT"] = "15000"
behind = c.run_model_async("double", "x", "x3")
for i in range(20):  # the store answers while the worker is stuck
    c.put_tensor(f"p{i}", np.full(4, i, np.float32))
    assert c.get_tensor(f"p{i}")[0] == i
try:
    stuck.wait()
    raise AssertionError("the endless call returned")
except ServerRuntimeError as exc:
    assert "timed out after 1 s" in str(exc), exc
behind.wait()
np.testing.assert_array_equal(c.get_tensor("x3"), 2 * x)
check("a model queued behind a stuck worker runs once the worker is replaced; the store answered meanwhile")

del os.environ["SR_MODEL_TIMEOUT"]
msg = timed_out(c.run_model, "never_full", "x", "z", within=(2.9, 12.0))
assert "model 'never_full' timed out after 3 s" in msg, msg
check("a queued request times out after the server's --model-timeout (3 s)")

engine = c.get_server_info()[0]["engine"]
print("timeouts:", engine["timeouts"], "abandoned workers:", engine["abandoned_workers"],
      "default timeout:", engine["default_timeout_s"], flush=True)
assert engine["timeouts"] == 3 and engine["abandoned_workers"] == 2 and engine["default_timeout_s"] == 3.0, engine
c.run_model("double", "x", "x4")
np.testing.assert_array_equal(c.get_tensor("x4"), 2 * x)
check("statistics: 3 timeouts, 2 workers replaced; the engine still serves")
print("engine_deadline: all checks passed", flush=True)
