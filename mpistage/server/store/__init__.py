"""One shard's store: the data structure (:mod:`.store`), where its bytes come from
(:mod:`.allocator`) and its HDF5 snapshots (:mod:`.snapshot`). No MPI in this package."""

from .allocator import HEAP, Allocator, HeapAllocator
from .store import ShardStore, StoredDataset, StoredTensor

__all__ = ["HEAP", "Allocator", "HeapAllocator", "ShardStore", "StoredDataset", "StoredTensor"]
