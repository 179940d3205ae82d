"""Domain-decomposed arrays over the ADIOS2 backend: N ranks each hold a block of one global
array; the result is one global ADIOS2 variable (its shape, and one block per rank with that
rank's start and count), as an MPI-enabled ADIOS2 would write it.

The ``adios2`` wheel has no MPI, so ranks cannot open one engine together. The blocks travel
over MPI to rank 0 (raw bytes with ``Gatherv``; nothing is pickled), which alone opens the
engine and puts each block with its own start and count. One stream per rank would need every
reader to know the decomposition and merge N streams itself; one writer keeps what stock
readers see identical to a parallel ADIOS2 writer's output. The price: rank 0's memory and link
carry the whole array each step (docs/adios2.md).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from ..errors import BadArgumentError, MpistageError
from ..protocol import CODE_DTYPES, DTYPE_CODES
from .adios2_config import Adios2Options

ROOT = 0


class DecomposedWriter:
    """Collective over ``comm``: rank 0 holds the ADIOS2 writer, every rank puts its blocks.

    ``put_block`` and ``flush`` (and ``close``) must be called by every rank in the same order.
    """

    def __init__(self, comm: Any, options: Adios2Options) -> None:
        if options.mode != "writer":
            raise BadArgumentError("a DecomposedWriter writes: give options with mode='writer'")
        self.comm = comm
        self.store = None
        error = None
        if comm.Get_rank() == ROOT:
            from .adios2_store import Adios2Store  # noqa: PLC0415 (adios2 is optional)
            try:
                self.store = Adios2Store(options)
            except MpistageError as exc:
                error = str(exc)
        self._agree("opening the ADIOS2 writer", error)

    def put_block(self, key: str, block: np.ndarray, start: Sequence[int], shape: Sequence[int]) -> None:
        """Put this rank's ``block`` of the global array ``key`` of ``shape`` at ``start``.
        Raises BadArgumentError on every rank when the blocks do not tile ``shape`` exactly, or
        ranks disagree on its rank or dtype."""
        dtype = np.dtype(block.dtype).newbyteorder("=")
        if dtype not in DTYPE_CODES:
            raise TypeError(f"dtype {block.dtype} is not supported")
        ndim = len(shape)
        if block.ndim != ndim or len(start) != ndim:
            raise BadArgumentError(f"block of {key!r}: {block.ndim} dims, start {list(start)}, global {list(shape)}")
        data = np.ascontiguousarray(block, dtype=dtype)
        head = np.array([ndim, DTYPE_CODES[dtype], *shape, *start, *data.shape], dtype=np.int64)
        heads = np.empty((self.comm.Get_size(), head.size), np.int64) if self.comm.Get_rank() == ROOT else None
        sizes = self.comm.gather(head.size, root=ROOT)  # ints only: no client data is pickled
        uniform = sizes is None or len(set(sizes)) == 1
        uniform = self.comm.bcast(uniform, root=ROOT)
        if not uniform:
            raise BadArgumentError(f"ranks disagree on the number of dimensions of {key!r}")
        self.comm.Gather(head, heads, root=ROOT)
        counts = None
        if heads is not None:
            counts = [int(np.prod(h[2 + 2 * ndim:], dtype=np.int64)) * dtype.itemsize for h in heads]
        payload = np.frombuffer(data.tobytes(), np.uint8) if data.size else np.empty(0, np.uint8)
        buffer = np.empty(sum(counts), np.uint8) if counts is not None else None
        self.comm.Gatherv(payload, (buffer, counts) if buffer is not None else None, root=ROOT)
        error = None
        if self.store is not None:
            try:
                self.store.write_blocks(key, list(shape), _blocks(key, heads, buffer, counts, ndim, shape))
            except Exception as exc:  # noqa: BLE001 (every rank must hear of it, or they wait forever)
                error = f"{type(exc).__name__}: {exc}"
        self._agree(f"putting {key!r}", error)

    def flush(self) -> None:
        """End the step on every rank (rank 0 publishes it)."""
        error = None
        if self.store is not None:
            try:
                self.store.flush()
            except MpistageError as exc:
                error = str(exc)
        self._agree("flush", error)

    @contextmanager
    def step(self) -> Iterator[DecomposedWriter]:
        """``with writer.step():`` put blocks, then publish the step."""
        yield self
        self.flush()

    def close(self) -> None:
        """Publish an open step and close the engine (collective)."""
        if self.store is not None:
            self.store.close()
        self.comm.Barrier()

    def _agree(self, what: str, error: str | None) -> None:
        error = self.comm.bcast(error, root=ROOT)  # rank 0's message (a str) or None
        if error is not None:
            raise BadArgumentError(f"{what}: {error}")


def _blocks(key: str, heads: np.ndarray, buffer: np.ndarray, counts: list[int], ndim: int,
            shape: Sequence[int]) -> list[tuple[list[int], np.ndarray]]:
    """The (start, array) blocks rank 0 gathered, checked to tile ``shape`` exactly."""
    covered = np.zeros(tuple(shape), np.uint8)
    blocks = []
    offset = 0
    for rank, (head, nbytes) in enumerate(zip(heads, counts, strict=True)):
        if list(head[2:2 + ndim]) != list(shape):
            raise BadArgumentError(f"rank {rank} says {key!r} is {list(head[2:2 + ndim])}, rank 0 says {list(shape)}")
        if int(head[1]) != int(heads[0][1]):
            raise BadArgumentError(f"ranks disagree on the dtype of {key!r}")
        start = [int(n) for n in head[2 + ndim:2 + 2 * ndim]]
        count = [int(n) for n in head[2 + 2 * ndim:]]
        if any(s < 0 or s + c > n for s, c, n in zip(start, count, shape, strict=True)):
            raise BadArgumentError(f"rank {rank}'s block of {key!r} (start {start}, count {count}) "
                                   f"is outside {list(shape)}")
        region = tuple(slice(s, s + c) for s, c in zip(start, count, strict=True))
        covered[region] += 1
        dtype = CODE_DTYPES[int(head[1])].newbyteorder("=")
        block = buffer[offset:offset + nbytes].view(dtype).reshape(count)
        offset += nbytes
        if block.size:
            blocks.append((start, block))
    if not np.all(covered == 1):
        raise BadArgumentError(f"the blocks of {key!r} do not tile {list(shape)} exactly "
                               f"({int(np.sum(covered == 0))} elements missing, {int(np.sum(covered > 1))} overlapped)")
    return blocks
