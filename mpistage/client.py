"""``Client``: the public API, with SmartRedis's names and semantics.

Knows names, key prefixes and argument checks; hands finished keys to a backend
(``mpistage.backends``) and never knows how the bytes travel or where they are stored.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .backends import open_backend
from .backends.base import Backend, StoreBackend
from .client_engine import EngineClientMixin
from .dataset import Dataset
from .errors import BadArgumentError
from .protocol import Kind, TensorDesc, key_field

KEY_CACHE_SIZE = 65536


class Client(EngineClientMixin):
    """A connection to the mpistage servers.

    ``Client()`` finds the servers by itself in an MPMD job; otherwise give ``address`` (a
    connection file) or set ``MPISTAGE_ADDRESS``. All ``Client`` objects of a process share one
    connection; the first one is collective over the application ranks (``comm``).
    ``backend`` chooses how data is staged: a name registered in ``mpistage.backends.BACKENDS``
    ("mpi", "inprocess") or a :class:`mpistage.backends.Backend`; by default the connection
    file's ``"backend"`` field, else "mpi". ``cluster`` is accepted for SmartRedis
    compatibility and ignored.

    Keys are prefixed as SmartRedis does: puts with the first of ``$SSKEYOUT``, reads with the
    first of ``$SSKEYIN`` (see :meth:`set_data_source`), for tensors, datasets and lists (models
    and scripts too after :meth:`use_model_ensemble_prefix`). A name that is not a ``str``
    raises TypeError; an empty key, or one over 1024 bytes with its prefix, raises ValueError.
    Raises ServerUnreachableError when the servers cannot be found.
    """

    def __init__(self, cluster: bool | None = None, address: str | None = None,
                 logger_name: str = "mpistage", comm: Any = None,
                 backend: str | Backend | None = None) -> None:
        self.logger_name = logger_name
        self._backend: Backend = open_backend(backend, address, comm)
        self._store: StoreBackend = self._backend.store
        self._put_prefix = os.environ.get("SSKEYOUT", "").split(",")[0]
        self._get_prefixes = [p for p in os.environ.get("SSKEYIN", "").split(",") if p]
        self._get_prefix = self._get_prefixes[0] if self._get_prefixes else ""
        self._prefix_use = {Kind.TENSOR: True, Kind.DATASET: True, Kind.LIST: True,
                            Kind.MODEL: False, Kind.SCRIPT: False}
        self._keys: dict[tuple[str, Kind, bool], str] = {}

    # ------------------------------------------------------------ keys
    @property
    def nshards(self) -> int:
        """How many shards the keys are spread over."""
        return self._store.nshards

    @property
    def backend(self) -> str:
        """The name of the backend this client stages through ("mpi", "inprocess"...)."""
        return self._backend.name

    def _key(self, name: str, kind: Kind, reading: bool = True) -> str:
        """The stored key of ``name``: its prefix applied (cached: simulations reuse their names)."""
        keys = self._keys
        key = keys.get((name, kind, reading))
        if key is None:
            if not isinstance(name, str):
                raise TypeError(f"a key must be a str, not {type(name).__name__}")
            use = self._prefix_use.get(kind)
            prefix = (self._get_prefix if reading else self._put_prefix) if use else ""
            key = f"{prefix}.{name}" if prefix else name
            key_field(key)  # raises ValueError for an empty or over-long key
            if len(keys) >= KEY_CACHE_SIZE:
                keys.clear()
            keys[(name, kind, reading)] = key
        return key

    def _prefixes_changed(self) -> None:
        self._keys.clear()

    # ------------------------------------------------------------ tensors
    def put_tensor(self, name: str, data: np.ndarray) -> None:
        """Store a numpy array under ``name`` (any supported dtype, any shape, any memory order).
        Raises TypeError for an unsupported dtype, StoreFullError when the shard is full."""
        if not isinstance(data, np.ndarray):
            raise TypeError(f"put_tensor takes a numpy.ndarray, not {type(data).__name__}")
        self._store.put_tensor(self._key(name, Kind.TENSOR, False), data)

    def get_tensor(self, name: str) -> np.ndarray:
        """The array stored under ``name``, in the memory order it was put with.
        Raises KeyNotFoundError when there is none."""
        return self._store.get_tensor(self._key(name, Kind.TENSOR))

    def unpack_tensor(self, name: str, result: np.ndarray) -> None:
        """Fill ``result`` (same shape and dtype as the stored tensor) in place.
        Raises BadArgumentError on a shape or dtype mismatch, KeyNotFoundError for a missing key."""
        if not isinstance(result, np.ndarray):
            raise TypeError("unpack_tensor fills a numpy.ndarray")

        def target(desc: TensorDesc) -> np.ndarray:
            if result.shape != desc.shape or result.dtype.newbyteorder("=") != desc.dtype.newbyteorder("="):
                raise BadArgumentError(
                    f"tensor {name!r} is {desc.dtype}{list(desc.shape)}, the result array is "
                    f"{result.dtype}{list(result.shape)}")
            fits = result.flags.f_contiguous if desc.order else result.flags.c_contiguous
            if fits and result.dtype.isnative:
                return result
            return np.empty(desc.shape, desc.dtype, order="F" if desc.order else "C")

        got = self._store.get_tensor(self._key(name, Kind.TENSOR), target)
        if got is not result:
            result[...] = got

    def delete_tensor(self, name: str) -> None:
        """Remove the tensor; raises KeyNotFoundError when ``name`` does not exist."""
        self._store.delete(Kind.TENSOR, self._key(name, Kind.TENSOR, False))

    def copy_tensor(self, src_name: str, dest_name: str) -> None:
        """Copy a tensor to a new key (across shards when they differ); raises KeyNotFoundError."""
        self._move(Kind.TENSOR, src_name, dest_name, False)

    def rename_tensor(self, old_name: str, new_name: str) -> None:
        """Move a tensor to a new key; raises KeyNotFoundError."""
        self._move(Kind.TENSOR, old_name, new_name, True)

    def tensor_exists(self, name: str) -> bool:
        """True when a tensor ``name`` is stored."""
        return self._store.exists(Kind.TENSOR, self._key(name, Kind.TENSOR))

    def key_exists(self, key: str) -> bool:
        """True when ``key`` (taken as it is, no prefix) names a tensor, dataset or list."""
        if not isinstance(key, str):
            raise TypeError(f"a key must be a str, not {type(key).__name__}")
        key_field(key)
        return self._store.exists(Kind.ANY, key)

    def poll_tensor(self, name: str, poll_frequency_ms: int, num_tries: int) -> bool:
        """Check up to ``num_tries`` times, ``poll_frequency_ms`` apart, for tensor ``name``."""
        return self._poll(lambda: self.tensor_exists(name), poll_frequency_ms, num_tries)

    def poll_key(self, key: str, poll_frequency_ms: int, num_tries: int) -> bool:
        """Check up to ``num_tries`` times, ``poll_frequency_ms`` apart, for ``key`` (no prefix)."""
        return self._poll(lambda: self.key_exists(key), poll_frequency_ms, num_tries)

    @staticmethod
    def _poll(check: Callable[[], bool], poll_frequency_ms: int, num_tries: int) -> bool:
        for attempt in range(num_tries):
            if check():
                return True
            if attempt + 1 < num_tries:
                time.sleep(poll_frequency_ms / 1000)
        return False

    def _move(self, kind: Kind, src_name: str, dst_name: str, rename: bool) -> None:
        self._store.copy(kind, self._key(src_name, kind), self._key(dst_name, kind, False), rename)

    # ------------------------------------------------------------ datasets
    def put_dataset(self, dataset: Dataset) -> None:
        """Store a Dataset (its tensors and metadata) under its name."""
        if not isinstance(dataset, Dataset):
            raise TypeError("put_dataset takes a mpistage.Dataset")
        self._store.put_dataset(self._key(dataset.get_name(), Kind.DATASET, False), dataset)

    def get_dataset(self, name: str) -> Dataset:
        """The dataset stored under ``name``; raises KeyNotFoundError when there is none."""
        ds = self._store.get_dataset(self._key(name, Kind.DATASET))
        ds.name = name
        return ds

    def delete_dataset(self, name: str) -> None:
        """Remove the dataset; raises KeyNotFoundError when there is none."""
        self._store.delete(Kind.DATASET, self._key(name, Kind.DATASET, False))

    def copy_dataset(self, src_name: str, dest_name: str) -> None:
        """Copy a dataset to a new key; raises KeyNotFoundError."""
        self._move(Kind.DATASET, src_name, dest_name, False)

    def rename_dataset(self, old_name: str, new_name: str) -> None:
        """Move a dataset to a new key; raises KeyNotFoundError."""
        self._move(Kind.DATASET, old_name, new_name, True)

    def dataset_exists(self, name: str) -> bool:
        """True when a dataset ``name`` is stored."""
        return self._store.exists(Kind.DATASET, self._key(name, Kind.DATASET))

    def poll_dataset(self, name: str, poll_frequency_ms: int, num_tries: int) -> bool:
        """Check up to ``num_tries`` times, ``poll_frequency_ms`` apart, for dataset ``name``."""
        return self._poll(lambda: self.dataset_exists(name), poll_frequency_ms, num_tries)

    # ------------------------------------------------------------ aggregation lists
    def append_to_list(self, list_name: str, dataset: Dataset) -> None:
        """Append a dataset's name to an aggregation list (put the dataset itself first)."""
        if not isinstance(dataset, Dataset):
            raise TypeError("append_to_list takes a mpistage.Dataset")
        self._store.list_append(self._key(list_name, Kind.LIST, False),
                                self._key(dataset.get_name(), Kind.DATASET, False))

    def delete_list(self, list_name: str) -> None:
        """Delete the list (not the datasets it names)."""
        self._store.delete(Kind.LIST, self._key(list_name, Kind.LIST, False))

    def copy_list(self, src_name: str, dest_name: str) -> None:
        """Copy a list (the names, not the datasets) to a new key; raises KeyNotFoundError."""
        self._move(Kind.LIST, src_name, dest_name, False)

    def rename_list(self, src_name: str, dest_name: str) -> None:
        """Move a list to a new key; raises KeyNotFoundError."""
        self._move(Kind.LIST, src_name, dest_name, True)

    def get_list_length(self, list_name: str) -> int:
        """How many datasets the list names (0 when there is no such list)."""
        return self._store.list_length(self._key(list_name, Kind.LIST))

    def poll_list_length(self, name: str, list_length: int, poll_frequency_ms: int, num_tries: int) -> bool:
        """Check up to ``num_tries`` times, ``poll_frequency_ms`` apart, for a length of ``list_length``."""
        return self._poll(lambda: self.get_list_length(name) == list_length, poll_frequency_ms, num_tries)

    def poll_list_length_gte(self, name: str, list_length: int, poll_frequency_ms: int, num_tries: int) -> bool:
        """As :meth:`poll_list_length`, for a length of at least ``list_length``."""
        return self._poll(lambda: self.get_list_length(name) >= list_length, poll_frequency_ms, num_tries)

    def poll_list_length_lte(self, name: str, list_length: int, poll_frequency_ms: int, num_tries: int) -> bool:
        """As :meth:`poll_list_length`, for a length of at most ``list_length``."""
        return self._poll(lambda: self.get_list_length(name) <= list_length, poll_frequency_ms, num_tries)

    def get_datasets_from_list(self, list_name: str) -> list[Dataset]:
        """Every dataset the list names, in order."""
        return self.get_dataset_list_range(list_name, 0, -1)

    def get_dataset_list_range(self, list_name: str, start_index: int, end_index: int) -> list[Dataset]:
        """Datasets at positions ``start_index..end_index`` (inclusive; negative counts from the end)."""
        names = self._store.list_range(self._key(list_name, Kind.LIST), int(start_index), int(end_index))
        return [self._store.get_dataset(n) for n in names]

    # ------------------------------------------------------------ servers
    def get_server_info(self) -> list[dict[str, Any]]:
        """Per shard: keys, bytes used, requests served (and engine statistics)."""
        return self._store.server_info()

    def save(self) -> list[str]:
        """Snapshot every shard to the servers' ``--snapshot`` directory; returns the files."""
        return self._store.save()

    def flush(self) -> None:
        """Publish what was put so far: a step-based backend ends its step here; on MPI every
        put is already in the store when it returns, and this does nothing."""
        self._store.flush()

    def shutdown_servers(self) -> None:
        """Ask every shard to stop, then say goodbye (as ``mpistage.close_connection``): the
        servers stop accepting jobs and exit once every connected job (this one included) has
        said goodbye. A later ``Client()`` in an MPMD job raises ServerUnreachableError."""
        self._store.shutdown_servers()

    # ------------------------------------------------------------ ensembles (SmartRedis names)
    def set_data_source(self, source_id: str) -> None:
        """Read keys with prefix ``source_id`` (one of $SSKEYIN)."""
        if source_id not in self._get_prefixes:
            raise BadArgumentError(f"{source_id!r} is not in SSKEYIN ({self._get_prefixes})")
        self._get_prefix = source_id
        self._prefixes_changed()

    def use_tensor_ensemble_prefix(self, use_prefix: bool) -> None:
        """Whether tensor names get the ensemble prefixes (on by default)."""
        self._prefix_use[Kind.TENSOR] = bool(use_prefix)
        self._prefixes_changed()

    def use_dataset_ensemble_prefix(self, use_prefix: bool) -> None:
        """Whether dataset names get the ensemble prefixes (on by default)."""
        self._prefix_use[Kind.DATASET] = bool(use_prefix)
        self._prefixes_changed()

    def use_list_ensemble_prefix(self, use_prefix: bool) -> None:
        """Whether aggregation list names get the ensemble prefixes (on by default)."""
        self._prefix_use[Kind.LIST] = bool(use_prefix)
        self._prefixes_changed()

    def use_model_ensemble_prefix(self, use_prefix: bool) -> None:
        """Whether model and script names get the ensemble prefixes (off by default)."""
        self._prefix_use[Kind.MODEL] = bool(use_prefix)
        self._prefix_use[Kind.SCRIPT] = bool(use_prefix)
        self._prefixes_changed()
