"""Where the store's bytes live: the seam between the shard store and its memory.

Every tensor buffer the shard keeps (a request's payload as received, a model's output, a copy)
comes from the store's :class:`Allocator`, and goes back to it when the store drops the value.
:class:`HeapAllocator` is ordinary process memory. A window arena (the store living in one-sided
window memory, so connect-mode clients can read values with ``MPI_Get``) is the next allocator;
it must not reuse a released buffer while a reply or a snapshot still holds it.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Allocator(Protocol):
    """Hands out flat ``uint8`` buffers and takes them back."""

    def alloc(self, nbytes: int) -> np.ndarray:
        """A writable, C-contiguous ``uint8`` array of ``nbytes`` (contents undefined)."""
        ...

    def release(self, buf: np.ndarray) -> None:
        """The store no longer holds ``buf`` (others may still read it until they drop it)."""
        ...

    def report(self) -> dict[str, int | str]:
        """What INFO shows about this allocator."""
        ...


class HeapAllocator:
    """Process heap memory (numpy); a released buffer is freed when its last reference goes."""

    name = "heap"

    def alloc(self, nbytes: int) -> np.ndarray:
        return np.empty(nbytes, np.uint8)

    def release(self, buf: np.ndarray) -> None:
        """Nothing to do: the garbage collector frees the buffer."""

    def report(self) -> dict[str, int | str]:
        return {"allocator": self.name}


HEAP = HeapAllocator()
