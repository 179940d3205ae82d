"""mpiexec -n 4: each rank puts its block of two global arrays through a DecomposedWriter
(2 x 2 blocks of uneven sizes, one of them Fortran-ordered; a 1-D split), for two steps, to the
BP5 file argv[1]; then checks that blocks that do not tile the array are refused on every rank."""

from __future__ import annotations

import sys

import numpy as np

from mpistage.backends.adios2_config import Adios2Options
from mpistage.backends.adios2_decomp import DecomposedWriter
from mpistage.errors import BadArgumentError
from mpistage.mpienv import mpi

SHAPE = (8, 6)
ROWS = ((0, 3), (3, 8))
COLS = ((0, 2), (2, 6))


def global_field(step: int) -> np.ndarray:
    """The global array every test side knows: ``G[i, j] = 100 i + j + 1000 step``."""
    i, j = np.indices(SHAPE)
    return (100.0 * i + j + 1000 * step).astype(np.float64)


def main() -> None:
    comm = mpi().COMM_WORLD
    rank = comm.Get_rank()
    assert comm.Get_size() == 4, "run with mpiexec -n 4"
    (r0, r1), (c0, c1) = ROWS[rank // 2], COLS[rank % 2]
    writer = DecomposedWriter(comm, Adios2Options("BP5", sys.argv[1], "writer"))
    for step in range(2):
        with writer.step():
            block = global_field(step)[r0:r1, c0:c1]
            writer.put_block("T", np.asfortranarray(block) if rank == 3 else block, (r0, c0), SHAPE)
            ids = np.arange(rank * 5, rank * 5 + 5 - rank, dtype=np.int32)  # 5, 4, 3, 2 elements
            writer.put_block("ids", ids, (sum(5 - k for k in range(rank)),), (14,))
    try:
        writer.put_block("bad", np.zeros((2, 2)), (0, 0), (4, 4))  # every rank at (0, 0): overlap
    except BadArgumentError as exc:
        assert "do not tile" in str(exc), exc
        print(f"rank {rank}: refused", flush=True)
    writer.close()


if __name__ == "__main__":
    main()
