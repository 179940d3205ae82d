"""Dynamic batching with four concurrent clients (run with 4 client ranks, any shard count).

1. EKEResNet, 3,000 points per client per round, batch_size = min_batch_size = 4 x 3,000: every
   round the four requests run as one forward pass. Each client checks its own rows against the
   same TorchScript model (the bytes ``get_model`` returns) called in-process on its own input.
2. A tiny model that raises on negative input: four requests batched together, one of them bad:
   the bad caller gets ServerRuntimeError, the other three their correct rows.
3. Same model, one request of the wrong shape: it cannot join the batch, fails alone; the other
   three run once ``min_batch_timeout`` has passed.
Statistics must show batches < requests and every row accounted for.
"""

import io

import numpy as np
import torch
from torch import Tensor, nn

import mpistage
from inference import EKEResNet, fuse_batchnorm, torchscript_bytes
from mpistage import Client, ServerRuntimeError
from mpistage.router import shard_of

POINTS, ROUNDS = 3000, 3
#: served vs in-process outputs of the same TorchScript model (float32): batching changes the
#: batch size the kernels see, which may change the summation order
TOL = {"rtol": 1e-4, "atol": 1e-5}

c = Client()
comm = mpistage.app_comm()
rank, size = comm.Get_rank(), comm.Get_size()
assert size == 4, "run with four client ranks"


def barrier() -> None:
    comm.Barrier()


def say(text: str) -> None:
    if rank == 0:
        print(text, flush=True)


class Picky(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        if bool((x < 0).any()):
            raise ValueError("negative input is not allowed")
        return x * 3 + 1


if rank == 0:
    torch.manual_seed(0)
    c.set_model("eke", torchscript_bytes(fuse_batchnorm(EKEResNet())), batch_size=4 * POINTS,
                min_batch_size=4 * POINTS, min_batch_timeout=5000)
    c.set_model("picky", Picky(), batch_size=4, min_batch_size=4, min_batch_timeout=1000)
barrier()

# ---------------------------------------------------------------- 1. EKEResNet, four clients
local = torch.jit.load(io.BytesIO(c.get_model("eke")))
rng = np.random.default_rng(100 + rank)
worst = 0.0
for r in range(ROUNDS):
    x = rng.standard_normal((POINTS, 4)).astype(np.float32) + rank  # distinct per client
    key_in, key_out = f"{{eke}}.in.{rank}", f"{{eke}}.out.{rank}.{r}"
    c.put_tensor(key_in, x)
    barrier()
    c.run_model("eke", key_in, key_out)
    got = c.get_tensor(key_out)
    with torch.inference_mode():
        want = local(torch.from_numpy(x)).numpy()
    assert got.shape == want.shape == (POINTS, 1), (got.shape, want.shape)
    assert np.allclose(got, want, **TOL), np.abs(got - want).max()
    worst = max(worst, float(np.abs(got - want).max()))
worst = comm.allreduce(worst, op=mpistage.mpienv.mpi().MAX)
barrier()
if rank == 0:
    home = shard_of("{eke}", c.nshards)
    st = c.get_server_info()[home]["engine"]["models"]["eke"]
    print(f"eke stats: requests {st['requests']} batches {st['batches']} rows {st['rows']} "
          f"mean batch {st['mean_batch_size']} errors {st['errors']} "
          f"mean queue wait {st['mean_queue_wait_ms']} ms mean compute {st['mean_compute_ms']} ms")
    assert st["requests"] == 4 * ROUNDS and st["rows"] == 4 * ROUNDS * POINTS, st
    assert st["batches"] == ROUNDS < st["requests"], st
    assert st["errors"] == 0, st
say(f"OK four clients, EKEResNet batched 4 requests per forward pass; each got its own rows "
    f"(max |served - in-process| = {worst:.2e})")
barrier()

# ---------------------------------------------------------------- 2. one bad request of four
x = np.full((1, 4), float(rank + 1), np.float32)
if rank == 2:
    x = -x
c.put_tensor(f"{{picky}}.in.{rank}", x)
barrier()
try:
    c.run_model("picky", f"{{picky}}.in.{rank}", f"{{picky}}.out.{rank}")
    assert rank != 2, "the bad request did not fail"
    assert np.array_equal(c.get_tensor(f"{{picky}}.out.{rank}"), x * 3 + 1)
except ServerRuntimeError as exc:
    assert rank == 2 and "negative input is not allowed" in str(exc), (rank, exc)
    print(f"rank 2 got: {exc}", flush=True)
assert not (rank == 2 and c.tensor_exists(f"{{picky}}.out.{rank}"))
barrier()
say("OK a batch of four with one bad request: three correct results, one ServerRuntimeError")

# ---------------------------------------------------------------- 3. one request of the wrong shape
x = np.full((1, 5 if rank == 3 else 4), float(rank + 1), np.float32)
c.put_tensor(f"{{picky}}.in2.{rank}", x)
barrier()
try:
    c.run_model("picky", f"{{picky}}.in2.{rank}", f"{{picky}}.out2.{rank}")
    got = c.get_tensor(f"{{picky}}.out2.{rank}")
    assert np.array_equal(got, x * 3 + 1), (rank, got)
except ServerRuntimeError as exc:  # Picky itself accepts any shape: check the message
    raise AssertionError(f"rank {rank}: {exc}") from None
barrier()
if rank == 0:
    st = c.get_server_info()[shard_of("{picky}", c.nshards)]["engine"]["models"]["picky"]
    print(f"picky stats: requests {st['requests']} batches {st['batches']} rows {st['rows']} "
          f"errors {st['errors']}")
    # round 2: one failed batch of 4, then each alone (4); round 3: one alone + one batch of 3
    assert st["requests"] == 8 and st["errors"] == 1 and st["rows"] == 8, st
    assert st["batches"] == 1 + 4 + 2, st
say("OK a request that cannot join a batch runs alone; the other three still batch")
barrier()
say("engine_batching: all checks passed")
