"""A client that is killed (SIGKILL, by the test) in the middle of a transfer. It prints
``victim READY pid=<pid>`` once it is in the phase named by its argument, then repeats it until
it is killed:

* ``announce``: a raw PUT_TENSOR header announcing a 64 MiB point-to-point payload that never comes;
* ``put-p2p`` / ``get-p2p``: puts / gets of a 48 MiB tensor (larger than the window slot: messages);
* ``put-rma`` / ``get-rma``: puts / gets of a 1 MiB tensor (through the one-sided window);
* ``idle``: one put, then nothing (a job killed while it has nothing in flight).
"""

import os
import sys
import time

import numpy as np

from mpistage import Client
from mpistage._mpi.process import get_connection
from mpistage.protocol import REQUEST_MAGIC, TAG_REQUEST, Op, describe, pack_message
from mpistage.router import shard_of

mode = sys.argv[1]
c = Client()
key = f"victim.{mode}"
big = np.arange((48 << 20) // 8, dtype=np.float64)
small = np.arange((1 << 20) // 8, dtype=np.float64)
data = small if mode.endswith("rma") else big


def ready() -> None:
    print(f"victim READY pid={os.getpid()}", flush=True)


if mode == "announce":
    desc, _ = describe(big)
    head = pack_message(REQUEST_MAGIC, Op.PUT_TENSOR, 16000, [key.encode(), desc.pack()], big.nbytes)
    get_connection().link.inter.Send(np.frombuffer(head, np.uint8), shard_of(key, c.nshards), TAG_REQUEST)
    ready()
    while True:
        time.sleep(1)
elif mode == "idle":
    c.put_tensor(key, small)
    ready()
    while True:
        time.sleep(1)
elif mode.startswith("put"):
    c.put_tensor(key, data)
    ready()
    while True:
        c.put_tensor(key, data)
else:
    c.put_tensor(key, data)
    ready()
    while True:
        c.get_tensor(key)
