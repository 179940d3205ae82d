"""A small coupled run: a 2-D heat equation split in row blocks over the application ranks, which
stages its field in the mpistage servers every few steps while it runs; rank 0 plays the
"analysis" side, reads every block back from the store, and publishes a diagnostic that all
ranks wait for. Prints what it did and the share of run time spent in mpistage calls.

    mpistage launch --servers 2 -n 4 -- python examples/coupled_demo.py [--steps 200]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import mpistage


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--every", type=int, default=20, help="stage the field every N steps")
    p.add_argument("--n", type=int, default=256, help="global grid is n x n")
    args = p.parse_args()

    client = mpistage.Client()
    comm = mpistage.app_comm()  # the world without the server ranks
    rank, size = comm.Get_rank(), comm.Get_size()
    rows = args.n // size
    T = np.zeros((rows + 2, args.n))  # one halo row above and below
    if rank == 0:
        T[1, :] = 100.0  # hot top edge
    up, down = rank - 1 if rank > 0 else None, rank + 1 if rank < size - 1 else None
    staged = 0.0
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        if up is not None:
            comm.Sendrecv(T[1], up, recvbuf=T[0], source=up)
        if down is not None:
            comm.Sendrecv(T[-2], down, recvbuf=T[-1], source=down)
        inner = T[1:-1, 1:-1]
        lap = T[:-2, 1:-1] + T[2:, 1:-1] + T[1:-1, :-2] + T[1:-1, 2:] - 4 * inner
        T[1:-1, 1:-1] = inner + 0.2 * lap
        if rank == 0:
            T[1, :] = 100.0
        if step % args.every:
            continue
        t0 = time.perf_counter()
        client.put_tensor(f"heat.{step}.{rank}", T[1:-1])
        if rank == 0:  # the analysis side: gather from the store, publish a diagnostic
            field = np.vstack([client.get_tensor(f"heat.{step}.{r}") for r in range(size)
                               if client.poll_tensor(f"heat.{step}.{r}", 1, 10_000)])
            client.put_tensor(f"diag.{step}", np.array([field.mean(), field.max(), field.shape[0]]))
        assert client.poll_tensor(f"diag.{step}", 1, 10_000)
        mean, peak, nrows = client.get_tensor(f"diag.{step}")
        staged += time.perf_counter() - t0
        if rank == 0:
            print(f"step {step:4d}: staged {size} blocks of {rows}x{args.n}, mean T {mean:8.4f}, "
                  f"max {peak:6.2f}, rows gathered {int(nrows)}", flush=True)
    total = time.perf_counter() - start
    staged_all = comm.reduce(staged, root=0)
    if rank == 0:
        info = client.get_server_info()
        keys = sum(s["keys"] for s in info)
        print(f"done: {args.steps} steps on {size} ranks, {len(info)} server shards holding {keys} keys; "
              f"time in mpistage calls {100 * staged_all / size / total:.1f}% of {total:.2f} s", flush=True)


if __name__ == "__main__":
    main()
