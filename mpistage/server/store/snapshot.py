"""Snapshots of the store in HDF5 (h5py): one file per shard in a snapshot directory.

Each shard writes ``PATH/shard-K-of-N.h5`` to a temporary name and renames it into place, so a
file at its final name is always complete. Restore reads every shard file and keeps the keys that
route to this shard, so a snapshot can be restored onto a different number of shards.

The file is written from :meth:`ShardStore.contents <.store.ShardStore.contents>`, taken on the
loop thread; writing it may then run on any thread, since it never touches the store itself.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import h5py
import numpy as np

from ...protocol import ORDER_F, TensorDesc
from ...router import shard_of
from .store import ShardStore, StoreContents, StoredDataset, StoredTensor

FORMAT_VERSION = 1


def snapshot_file(directory: str | os.PathLike[str], shard: int, nshards: int) -> Path:
    return Path(directory) / f"shard-{shard}-of-{nshards}.h5"


HDF5_MAX_RANK = 32  # HDF5's limit; tensors of more dimensions are written flat with a "shape" attribute


def remove_stale_temporaries(directory: str | os.PathLike[str], shard: int, nshards: int) -> list[Path]:
    """Remove what a snapshot of this shard killed mid-write left behind (its temporary file);
    returns the paths removed. Called when a server starts."""
    stale = sorted(Path(directory).glob(f".{snapshot_file(directory, shard, nshards).name}.*.tmp"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def _write_tensor(group: h5py.Group, name: str, key: str, tensor: StoredTensor) -> None:
    arr = np.require(tensor.array(), requirements="C")  # keeps 0 dimensions (ascontiguousarray would not)
    if arr.ndim > HDF5_MAX_RANK:
        dset = group.create_dataset(name, data=arr.reshape(-1))
        dset.attrs["shape"] = np.array(arr.shape, np.uint64)
    else:
        dset = group.create_dataset(name, data=arr, shape=arr.shape)
    dset.attrs["key"] = key
    dset.attrs["order"] = "F" if tensor.desc.order == ORDER_F else "C"


def _read_tensor(dset: h5py.Dataset, store: ShardStore) -> StoredTensor:
    shape = tuple(int(d) for d in dset.attrs["shape"]) if "shape" in dset.attrs else dset.shape
    arr = dset[()] if dset.shape != () else np.asarray(dset[()])
    arr = np.asarray(arr, dtype=dset.dtype).reshape(shape)
    if dset.attrs["order"] == "F":
        arr = np.asfortranarray(arr)
    desc = TensorDesc(arr.dtype, arr.shape, ORDER_F if dset.attrs["order"] == "F" else 0)
    flat = store.alloc(desc.nbytes)
    flat[...] = arr.reshape(-1, order="F" if desc.order == ORDER_F else "C").view(np.uint8)
    return StoredTensor(desc, flat)


def write_snapshot(contents: StoreContents, directory: str | os.PathLike[str], shard: int,
                   nshards: int) -> Path:
    """Write one shard's tensors, datasets and lists (``contents``, see the module docstring);
    atomic at the final path. Raises OSError when the directory cannot be written."""
    target = snapshot_file(directory, shard, nshards)
    target.parent.mkdir(parents=True, exist_ok=True)
    tensors, datasets, lists = contents.tensors, contents.datasets, contents.lists
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT_VERSION
            f.attrs["shard"], f.attrs["nshards"] = shard, nshards
            tg = f.create_group("tensors")
            for i, (key, t) in enumerate(tensors.items()):
                _write_tensor(tg, str(i), key, t)
            dg = f.create_group("datasets")
            for i, (name, ds) in enumerate(datasets.items()):
                g = dg.create_group(str(i))
                g.attrs["key"] = name
                g.attrs["metadata"] = np.void(ds.metadata)
                for j, (tname, t) in enumerate(ds.tensors.items()):
                    _write_tensor(g, str(j), tname, t)
            lg = f.create_group("lists")
            for i, (name, items) in enumerate(lists.items()):
                d = lg.create_dataset(str(i), data=np.array(items, dtype=h5py.string_dtype()))
                d.attrs["key"] = name
        os.replace(tmp, target)
    except Exception:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def restore_snapshot(store: ShardStore, directory: str | os.PathLike[str], shard: int,
                     nshards: int) -> int:
    """Load into ``store`` every key of the snapshot that routes to ``shard``; returns the count."""
    files = sorted(Path(directory).glob("shard-*-of-*.h5"))
    if not files:
        raise FileNotFoundError(f"no snapshot files (shard-K-of-N.h5) in {directory}")
    count = 0
    for path in files:
        with h5py.File(path, "r") as f:
            for dset in f["tensors"].values():
                key = str(dset.attrs["key"])
                if shard_of(key, nshards) == shard:
                    store.put_tensor(key, _read_tensor(dset, store))
                    count += 1
            for g in f["datasets"].values():
                name = str(g.attrs["key"])
                if shard_of(name, nshards) == shard:
                    members = sorted(g.values(), key=lambda d: int(d.name.rsplit("/", 1)[1]))
                    tensors = {str(d.attrs["key"]): _read_tensor(d, store) for d in members}
                    store.put_dataset(name, StoredDataset(tensors, bytes(g.attrs["metadata"].tobytes())))
                    count += 1
            for d in f["lists"].values():
                name = str(d.attrs["key"])
                if shard_of(name, nshards) == shard:
                    for item in d.asstr()[()]:
                        store.append_to_list(name, str(item))
                    count += 1
    return count
