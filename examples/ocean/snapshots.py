"""The fine run's snapshots in the store: their keys, waiting for them, assembling the basin from the blocks.

With ``&coupling stream = .true.`` every rank of the model puts, each ``snapshot_interval`` model days
(``src/ocean_coupling.f90``)::

    {<run>.r<rank>}.dDDDDDD.u, .v, .h   float64 (nxl, nyl): cell-centred u, v and h of its block
    {<run>.r<rank>}.dDDDDDD.meta        int64 [i0, j0, nxl, nyl, nx, ny, D, nranks]

``.meta`` is put last, after the three fields on the same shard, so a rank's ``.meta`` existing means
its block is complete. :class:`SnapshotSource` waits for every rank's ``.meta`` of a day (a yielding
poll, never a spin) and :func:`assemble` puts the blocks together into one basin-wide :class:`Snapshot`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ocean.features import cell_centred

FIELDS = ("u", "v", "h")
META_LEN = 8


def snapshot_key(run_name: str, rank: int, day: int, field: str) -> str:
    """The key of ``field`` (u, v, h or meta) of rank ``rank``'s block on model day ``day``."""
    return f"{{{run_name}.r{rank}}}.d{day:06d}.{field}"


@dataclass(frozen=True)
class Snapshot:
    """One basin-wide state of the fine run: cell-centred u, v and h, each (nx, ny), on model day ``day``."""

    day: int
    u: np.ndarray
    v: np.ndarray
    h: np.ndarray

    @classmethod
    def from_state(cls, s: Any) -> Snapshot:
        """The snapshot of an ``ocean.state.OceanState`` (face velocities averaged to the centres)."""
        uc, vc = cell_centred(s.u, s.v)
        return cls(int(round(s.day)), uc, vc, np.asarray(s.h, dtype=np.float64))


@dataclass(frozen=True)
class BlockMeta:
    """A block's place in the basin: cells i0+1..i0+nxl, j0+1..j0+nyl of nx x ny, on ``day``, of ``nranks``."""

    i0: int
    j0: int
    nxl: int
    nyl: int
    nx: int
    ny: int
    day: int
    nranks: int

    @classmethod
    def from_array(cls, a: np.ndarray) -> BlockMeta:
        """Read an int64 meta tensor; raises ValueError if it is not 8 integers describing a block in the grid."""
        a = np.asarray(a)
        if a.shape != (META_LEN,) or not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"a snapshot meta tensor is {META_LEN} integers, got {a.dtype} {a.shape}")
        m = cls(*(int(x) for x in a))
        if min(m.nxl, m.nyl, m.nx, m.ny, m.nranks) < 1 or m.i0 < 0 or m.j0 < 0 \
                or m.i0 + m.nxl > m.nx or m.j0 + m.nyl > m.ny:
            raise ValueError(f"snapshot meta does not describe a block of the grid: {m}")
        return m


def assemble(blocks: Sequence[tuple[BlockMeta, dict[str, np.ndarray]]]) -> Snapshot:
    """The basin-wide snapshot of all ranks' blocks (meta, {"u", "v", "h"} arrays (nxl, nyl)).

    Raises ValueError when the blocks disagree on the grid, the day or the rank count, when a field
    has the wrong shape, or when the blocks do not tile the grid exactly once.
    """
    if not blocks:
        raise ValueError("no blocks to assemble")
    first = blocks[0][0]
    if len(blocks) != first.nranks:
        raise ValueError(f"{len(blocks)} blocks for a run of {first.nranks} ranks")
    out = {f: np.zeros((first.nx, first.ny)) for f in FIELDS}
    cover = np.zeros((first.nx, first.ny), dtype=np.int32)
    for meta, arrays in blocks:
        if (meta.nx, meta.ny, meta.day, meta.nranks) != (first.nx, first.ny, first.day, first.nranks):
            raise ValueError(f"blocks disagree: {meta} and {first}")
        where = np.s_[meta.i0:meta.i0 + meta.nxl, meta.j0:meta.j0 + meta.nyl]
        for f in FIELDS:
            a = arrays[f]
            if a.shape != (meta.nxl, meta.nyl):
                raise ValueError(f"field {f} of the block at ({meta.i0}, {meta.j0}) is {a.shape}, "
                                 f"meta says {(meta.nxl, meta.nyl)}")
            out[f][where] = a
        cover[where] += 1
    if (cover != 1).any():
        raise ValueError(f"the blocks of day {first.day} do not tile the {first.nx} x {first.ny} grid exactly once")
    return Snapshot(first.day, out["u"], out["v"], out["h"])


class SnapshotSource:
    """Snapshots of run ``run_name`` (``nranks`` model ranks) read through a connected ``mpistage.Client``.

    The client must read keys as they are (no ``SSKEYIN`` prefix on tensors: the trainer calls
    ``use_tensor_ensemble_prefix(False)``). ``poll_ms`` is the sleep between two checks of a key.
    """

    def __init__(self, client: Any, run_name: str, nranks: int, poll_ms: int = 200) -> None:
        if nranks < 1:
            raise ValueError(f"nranks must be at least 1, got {nranks}")
        self.client, self.run_name, self.nranks, self.poll_ms = client, run_name, nranks, poll_ms

    def wait(self, day: int, timeout: float) -> None:
        """Wait until every rank's block of ``day`` is complete; raises TimeoutError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        for rank in range(self.nranks):
            key = snapshot_key(self.run_name, rank, day, "meta")
            left = deadline - time.monotonic()
            tries = max(1, math.ceil(max(left, 0.0) * 1000 / self.poll_ms) + 1)
            if not self.client.poll_key(key, self.poll_ms, tries):
                raise TimeoutError(f"no snapshot of day {day} from rank {rank} of run {self.run_name!r} "
                                   f"({key}) within {timeout:g} s")

    def read(self, day: int) -> Snapshot:
        """The assembled snapshot of ``day`` (every block must be in the store; see :meth:`wait`)."""
        blocks = []
        for rank in range(self.nranks):
            meta = BlockMeta.from_array(self.client.get_tensor(snapshot_key(self.run_name, rank, day, "meta")))
            if meta.day != day or meta.nranks != self.nranks:
                raise ValueError(f"rank {rank}'s snapshot meta says day {meta.day} of {meta.nranks} ranks, "
                                 f"expected day {day} of {self.nranks}")
            arrays = {f: np.asarray(self.client.get_tensor(snapshot_key(self.run_name, rank, day, f)),
                                    dtype=np.float64) for f in FIELDS}
            blocks.append((meta, arrays))
        return assemble(blocks)
