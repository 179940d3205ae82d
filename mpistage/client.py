"""``Client``: the public API, with SmartRedis's names, argument checks and key-space semantics.

Knows names, key prefixes and argument checks; hands finished keys to a backend
(``mpistage.backends``) and never knows how the bytes travel or where they are stored.
"""

from __future__ import annotations

import inspect
import os
import textwrap
import time
import warnings
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ._mpi.connfile import ADDRESS_ENV, launched_by_mpiexec
from .backends import open_backend
from .backends.base import Backend, RunHandle, ServerAdmin, StoreBackend
from .client_engine import EngineClientMixin
from .dataset import Dataset
from .errors import (
    BadArgumentError,
    KeyNotFoundError,
    MpistageError,
    ServerUnreachableError,
    UnknownChoiceError,
    typecheck,
)
from .protocol import Kind, Op, TensorDesc, key_field

KEY_CACHE_SIZE = 65536
#: The model backends SmartRedis knows; an unknown name is a TypeError, a known one that this
#: mpistage cannot run is the engine's BadArgumentError.
SMARTREDIS_BACKENDS = ("TF", "TFLITE", "TORCH", "ONNX", "ORT")  # ORT: the ONNX runtime's other name
_KEY_LISTS = (list, str)

#: Where each open MPI connection of this process leads (see ``Client._check_target``).
_TARGETS: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


class Client(EngineClientMixin):
    """A connection to the mpistage servers.

    ``Client()`` finds the servers by itself in an MPMD job; otherwise give ``address`` (a
    connection file) or set ``MPISTAGE_ADDRESS``. All ``Client`` objects of a process share one
    connection; the first one is collective over the application ranks (``comm``). A later
    ``Client`` whose ``address`` names other servers than the open connection raises
    ServerUnreachableError (it is never silently given the first one's servers).
    ``backend`` chooses how data is staged: a name registered in ``mpistage.backends.BACKENDS``
    ("mpi", "inprocess") or a :class:`mpistage.backends.Backend`; by default the connection
    file's ``"backend"`` field, else "mpi". ``cluster`` is accepted for SmartRedis
    compatibility and ignored.

    Keys are prefixed as SmartRedis does: puts with the first of ``$SSKEYOUT``, reads with the
    first of ``$SSKEYIN`` (see :meth:`set_data_source`), for tensors, datasets and lists (models
    and scripts too after :meth:`use_model_ensemble_prefix`). Arguments of the wrong type raise
    TypeError, as in SmartRedis; an empty key, or one over 1024 bytes with its prefix, raises
    ValueError. Deleting a tensor, dataset or list that does not exist does nothing (Redis's
    ``DEL``). Raises ServerUnreachableError when the servers cannot be found.
    """

    def __init__(self, cluster: bool | None = None, address: str | os.PathLike[str] | None = None,
                 logger_name: str = "mpistage", comm: Any = None,
                 backend: str | Backend | None = None) -> None:
        if address is not None:
            typecheck(address, "address", (str, os.PathLike))
            address = os.fspath(address)
        typecheck(logger_name, "logger_name", str)
        self.logger_name = logger_name
        self._backend: Backend = open_backend(backend, address, comm)
        self._store: StoreBackend = self._backend.store
        if self._backend.name == "mpi" and not isinstance(backend, Backend):
            self._check_target(address, comm)
        self._set_prefixes(os.environ.get("SSKEYOUT", ""), os.environ.get("SSKEYIN", ""))
        self._prefix_use = {Kind.TENSOR: True, Kind.DATASET: True, Kind.LIST: True,
                            Kind.MODEL: False, Kind.SCRIPT: False}

    def _set_prefixes(self, sskeyout: str, sskeyin: str) -> None:
        """Take the ensemble prefixes from SSKEYOUT/SSKEYIN-style comma lists."""
        self._put_prefix = sskeyout.split(",")[0]
        self._get_prefixes = [p for p in sskeyin.split(",") if p]
        self._get_prefix = self._get_prefixes[0] if self._get_prefixes else ""
        self._keys: dict[tuple[str, Kind, bool], str] = {}

    @staticmethod
    def _check_target(address: str | None, comm: Any) -> None:
        """Record where this process's MPI connection leads, or raise when ``address`` names
        other servers than the connection that is open (one connection per process)."""
        from ._mpi.links import is_mpmd_app
        from ._mpi.process import get_connection

        conn = get_connection(address, comm)  # the open one: nothing is opened here
        wanted = os.path.realpath(address) if address is not None else None
        known = _TARGETS.get(conn)
        if known is None:
            env = os.environ.get(ADDRESS_ENV)
            mpmd = launched_by_mpiexec() and is_mpmd_app()
            _TARGETS[conn] = wanted or (os.path.realpath(env) if env and not mpmd else "this MPMD job's servers")
        elif wanted is not None and wanted != known:
            raise ServerUnreachableError(
                f"this process is connected to {known}; mpistage keeps one connection per process, "
                f"so a Client for {wanted} cannot be opened alongside it (call "
                f"mpistage.close_connection() first)")

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(logger_name={self.logger_name!r}, backend={self.backend!r}, "
                f"shards={self.nshards})")

    def __str__(self) -> str:
        return (f"Client ({self.logger_name}):\n  Backend: {self.backend}\n  Shards: {self.nshards}\n"
                f"  Put prefix: {self._put_prefix or '(none)'}\n"
                f"  Get prefix: {self._get_prefix or '(none)'}")

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
        key = keys.get((name, kind, reading)) if isinstance(name, str) else None
        if key is None:
            typecheck(name, "name", str)
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

    def _delete(self, kind: Kind, name: str) -> None:
        """Delete ``name``; a key that does not exist is no error (Redis's ``DEL``)."""
        key = self._key(name, kind, False)
        try:
            self._store.delete(kind, key)
        except KeyNotFoundError:
            pass

    # ------------------------------------------------------------ tensors
    def put_tensor(self, name: str, data: np.ndarray) -> None:
        """Store a numpy array under ``name`` (any supported dtype, any shape, any memory order).
        Raises TypeError for an unsupported dtype, StoreFullError when the shard is full."""
        if not isinstance(data, np.ndarray):
            typecheck(data, "data", np.ndarray)
        self._store.put_tensor(self._key(name, Kind.TENSOR, False), data)

    def get_tensor(self, name: str) -> np.ndarray:
        """The array stored under ``name``, in the memory order it was put with.
        Raises KeyNotFoundError when there is none."""
        return self._store.get_tensor(self._key(name, Kind.TENSOR))

    def unpack_tensor(self, name: str, result: np.ndarray) -> None:
        """Fill ``result`` (same shape and dtype as the stored tensor) in place.
        Raises BadArgumentError on a shape or dtype mismatch, KeyNotFoundError for a missing key."""
        typecheck(result, "result", np.ndarray)

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
        """Remove the tensor (nothing happens when there is none, as in SmartRedis)."""
        self._delete(Kind.TENSOR, name)

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
        """True when ``key`` (taken as it is, no prefix) names a tensor, dataset, list, model or
        script (as every RedisAI key is a Redis key)."""
        typecheck(key, "key", str)
        key_field(key)
        if self._store.exists(Kind.ANY, key):
            return True
        return self._backend.engine is not None and (
            self._store.exists(Kind.MODEL, key) or self._store.exists(Kind.SCRIPT, key))

    def poll_tensor(self, name: str, poll_frequency_ms: int, num_tries: int) -> bool:
        """Check up to ``num_tries`` times, ``poll_frequency_ms`` apart, for tensor ``name``."""
        typecheck(name, "name", str)
        return self._poll(lambda: self.tensor_exists(name), poll_frequency_ms, num_tries)

    def poll_key(self, key: str, poll_frequency_ms: int, num_tries: int) -> bool:
        """Check up to ``num_tries`` times, ``poll_frequency_ms`` apart, for ``key`` (no prefix)."""
        typecheck(key, "key", str)
        return self._poll(lambda: self.key_exists(key), poll_frequency_ms, num_tries)

    @staticmethod
    def _poll(check: Callable[[], bool], poll_frequency_ms: int, num_tries: int) -> bool:
        typecheck(poll_frequency_ms, "poll_frequency_ms", int)
        typecheck(num_tries, "num_tries", int)
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
        typecheck(dataset, "dataset", Dataset)
        self._store.put_dataset(self._key(dataset.get_name(), Kind.DATASET, False), dataset)

    def get_dataset(self, name: str) -> Dataset:
        """The dataset stored under ``name``; raises KeyNotFoundError when there is none."""
        ds = self._store.get_dataset(self._key(name, Kind.DATASET))
        ds.name = name
        return ds

    def delete_dataset(self, name: str) -> None:
        """Remove the dataset (nothing happens when there is none, as in SmartRedis)."""
        self._delete(Kind.DATASET, name)

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
        typecheck(name, "name", str)
        return self._poll(lambda: self.dataset_exists(name), poll_frequency_ms, num_tries)

    # ------------------------------------------------------------ aggregation lists
    def append_to_list(self, list_name: str, dataset: Dataset) -> None:
        """Append a dataset's name to an aggregation list (put the dataset itself first)."""
        typecheck(list_name, "list_name", str)
        typecheck(dataset, "dataset", Dataset)
        self._store.list_append(self._key(list_name, Kind.LIST, False),
                                self._key(dataset.get_name(), Kind.DATASET, False))

    def delete_list(self, list_name: str) -> None:
        """Delete the list (not the datasets it names); nothing happens when there is none."""
        self._delete(Kind.LIST, list_name)

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
        return self._poll_length(name, list_length, poll_frequency_ms, num_tries, int.__eq__)

    def poll_list_length_gte(self, name: str, list_length: int, poll_frequency_ms: int, num_tries: int) -> bool:
        """As :meth:`poll_list_length`, for a length of at least ``list_length``."""
        return self._poll_length(name, list_length, poll_frequency_ms, num_tries, int.__ge__)

    def poll_list_length_lte(self, name: str, list_length: int, poll_frequency_ms: int, num_tries: int) -> bool:
        """As :meth:`poll_list_length`, for a length of at most ``list_length``."""
        return self._poll_length(name, list_length, poll_frequency_ms, num_tries, int.__le__)

    def _poll_length(self, name: str, list_length: int, poll_frequency_ms: int, num_tries: int,
                     test: Callable[[int, int], bool]) -> bool:
        typecheck(name, "name", str)
        typecheck(list_length, "list_length", int)
        return self._poll(lambda: test(self.get_list_length(name), list_length), poll_frequency_ms, num_tries)

    def get_datasets_from_list(self, list_name: str) -> list[Dataset]:
        """Every dataset the list names, in order."""
        return self.get_dataset_list_range(list_name, 0, -1)

    def get_dataset_list_range(self, list_name: str, start_index: int, end_index: int) -> list[Dataset]:
        """Datasets at positions ``start_index..end_index`` (inclusive; negative counts from the end)."""
        typecheck(start_index, "start_index", int)
        typecheck(end_index, "end_index", int)
        names = self._store.list_range(self._key(list_name, Kind.LIST), start_index, end_index)
        return [self._store.get_dataset(n) for n in names]

    # ------------------------------------------------------------ models and scripts (checks)
    def set_model(self, name: str, model: Any, backend: str = "TORCH", device: str = "CPU",
                  batch_size: int = 0, min_batch_size: int = 0, min_batch_timeout: int = 0,
                  tag: str = "", inputs: str | Sequence[str] | None = None,
                  outputs: str | Sequence[str] | None = None, example_inputs: Any = None) -> None:
        """Store a model on every shard under ``name``, all or nothing (see
        :meth:`mpistage.client_engine.EngineClientMixin.set_model`). ``backend`` and ``device``
        are case-insensitive; ``"GPU:n"`` is ``"GPU"`` (each server rank picks its GPU). An
        unknown backend or device raises TypeError, as in SmartRedis; ``min_batch_size`` without
        ``batch_size``, or ``min_batch_timeout`` without ``min_batch_size``, BadArgumentError;
        ``min_batch_size`` without ``min_batch_timeout`` warns (a lone request would wait for
        company forever)."""
        backend, device = _check_model_args(name, backend, device, batch_size, min_batch_size,
                                            min_batch_timeout, tag, inputs, outputs)
        super().set_model(name, model, backend, device, batch_size, min_batch_size, min_batch_timeout,
                          tag, example_inputs=example_inputs)

    def set_model_from_file(self, name: str, model_file: str | os.PathLike[str], backend: str = "TORCH",
                            device: str = "CPU", batch_size: int = 0, min_batch_size: int = 0,
                            min_batch_timeout: int = 0, tag: str = "",
                            inputs: str | Sequence[str] | None = None,
                            outputs: str | Sequence[str] | None = None) -> None:
        """:meth:`set_model` with the bytes of a TorchScript file; FileNotFoundError when there is none."""
        typecheck(model_file, "model_file", (str, os.PathLike))
        backend, device = _check_model_args(name, backend, device, batch_size, min_batch_size,
                                            min_batch_timeout, tag, inputs, outputs)
        super().set_model_from_file(name, model_file, backend, device, batch_size, min_batch_size,
                                    min_batch_timeout, tag)

    def get_model(self, name: str) -> bytes:
        """The TorchScript file bytes stored under ``name``; raises KeyNotFoundError."""
        typecheck(name, "name", str)
        return super().get_model(name)

    def delete_model(self, name: str) -> None:
        """Remove the model from every shard; raises KeyNotFoundError when there is none. The
        name takes the data-source (SSKEYIN) prefix, as in SmartRedis."""
        typecheck(name, "name", str)
        self._engine.delete_code(Kind.MODEL, self._key(name, Kind.MODEL))

    def model_exists(self, name: str) -> bool:
        """True when a model or a script ``name`` is stored (RedisAI's keys, as in SmartRedis)."""
        typecheck(name, "name", str)
        return super().model_exists(name) or self._store.exists(Kind.SCRIPT, self._key(name, Kind.SCRIPT))

    def poll_model(self, name: str, poll_frequency_ms: int, num_tries: int) -> bool:
        """Check up to ``num_tries`` times, ``poll_frequency_ms`` apart, for model or script ``name``."""
        typecheck(name, "name", str)
        return self._poll(lambda: self.model_exists(name), poll_frequency_ms, num_tries)

    def run_model(self, name: str, inputs: str | Sequence[str] | None = None,
                  outputs: str | Sequence[str] | None = None, timeout: float | None = None) -> None:
        """Run model ``name`` on the tensors ``inputs``, store its outputs under ``outputs``;
        ``timeout``: seconds it may take (mpistage's; SmartRedis has only ``SR_MODEL_TIMEOUT``)
        (see :meth:`mpistage.client_engine.EngineClientMixin.run_model`)."""
        self.run_model_async(name, inputs, outputs, timeout).wait()

    def run_model_async(self, name: str, inputs: str | Sequence[str] | None = None,
                        outputs: str | Sequence[str] | None = None, timeout: float | None = None) -> RunHandle:
        """Start :meth:`run_model` and return at once; ``handle.wait()`` gives its result."""
        typecheck(name, "name", str)
        return super().run_model_async(name, *_check_key_lists(inputs, outputs), timeout)

    def set_script(self, name: str, script: str, device: str = "CPU") -> None:
        """Store TorchScript source on every shard under ``name``, all or nothing; an unknown
        device raises TypeError."""
        typecheck(name, "name", str)
        typecheck(script, "script", str)
        super().set_script(name, script, _check_device(device))

    def set_script_from_file(self, name: str, file: str | os.PathLike[str], device: str = "CPU") -> None:
        """:meth:`set_script` with the source read from ``file``; FileNotFoundError when there is none."""
        typecheck(file, "file", (str, os.PathLike))
        typecheck(name, "name", str)
        super().set_script_from_file(name, file, _check_device(device))

    def set_function(self, name: str, function: Callable[..., Any], device: str = "CPU") -> None:
        """Store a Python function's source as a script, as SmartRedis does (so
        :meth:`get_script` gives that source back): run it with
        ``run_script(name, function.__name__, ...)``. The function must be valid TorchScript and
        self-contained (it may call torch, not other Python functions)."""
        typecheck(name, "name", str)
        if not callable(function):
            raise TypeError(f"argument function must be callable, not {type(function).__name__}")
        try:
            source = textwrap.dedent(inspect.getsource(function))
        except (OSError, TypeError) as exc:
            raise TypeError(f"the source of {function!r} cannot be found: {exc}") from None
        self.set_script(name, source, device)

    def get_script(self, name: str) -> str:
        """The source stored under ``name`` (as it was set); raises KeyNotFoundError."""
        typecheck(name, "name", str)
        return super().get_script(name)

    def delete_script(self, name: str) -> None:
        """Remove the script from every shard; raises KeyNotFoundError when there is none (the
        data-source prefix, as :meth:`delete_model`)."""
        typecheck(name, "name", str)
        self._engine.delete_code(Kind.SCRIPT, self._key(name, Kind.SCRIPT))

    def run_script(self, name: str, fn_name: str, inputs: str | Sequence[str],
                   outputs: str | Sequence[str], timeout: float | None = None) -> None:
        """Call function ``fn_name`` of script ``name`` on the tensors ``inputs``, store what it
        returns under ``outputs``; ``timeout`` as for :meth:`run_model`
        (see :meth:`mpistage.client_engine.EngineClientMixin.run_script`)."""
        self.run_script_async(name, fn_name, inputs, outputs, timeout).wait()

    def run_script_async(self, name: str, fn_name: str, inputs: str | Sequence[str],
                         outputs: str | Sequence[str], timeout: float | None = None) -> RunHandle:
        """Start :meth:`run_script` and return at once; ``handle.wait()`` gives its result."""
        typecheck(name, "name", str)
        typecheck(fn_name, "fn_name", str)
        return super().run_script_async(name, fn_name, *_check_key_lists(inputs, outputs), timeout)

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

    # ------------------------------------------------------------ server management
    def _admin(self) -> ServerAdmin:
        if not isinstance(self._store, ServerAdmin):
            raise BadArgumentError(f"the {self.backend} backend has no server management")
        return self._store

    def _shard_indices(self, shards: Sequence[int] | None) -> list[int]:
        if shards is None:
            return list(range(self.nshards))
        typecheck(shards, "shards", (list, tuple))
        for s in shards:
            typecheck(s, "a shard", int)
            if not 0 <= s < self.nshards:
                raise BadArgumentError(f"shard {s} is not among the {self.nshards} shards")
        return list(shards)

    def flush_shards(self, shards: Sequence[int] | None = None) -> None:
        """Remove every key of every kind from each of ``shards`` (all when None): tensors,
        datasets, lists, models and scripts (Redis's ``FLUSHDB``; SmartRedis's ``flush_db``)."""
        self._admin().flush_db(self._shard_indices(shards))

    def get_server_config(self, pattern: str = "*", shard: int = 0) -> dict[str, str]:
        """The settings of ``shard`` whose names match the glob ``pattern`` (case-insensitive),
        as text: ``maxmemory`` (bytes, 0: no cap), ``model-timeout`` (ms), ``shards``, ``shard``
        (docs/smartredis.md, "Server settings")."""
        typecheck(pattern, "pattern", str)
        if not pattern:
            raise BadArgumentError("the pattern is empty")
        (index,) = self._shard_indices([shard])
        return self._admin().config_get(index, pattern)

    def set_server_config(self, name: str, value: str, shards: Sequence[int] | None = None) -> None:
        """Change a setting on each of ``shards`` (all when None): ``maxmemory`` (bytes, or
        Redis's units: ``100mb``, ``2gb``; 0: no cap) or ``model-timeout`` (ms); another name
        raises BadArgumentError."""
        typecheck(name, "name", str)
        typecheck(value, "value", str)
        if not name or not value:
            raise BadArgumentError("a setting needs a name and a value")
        self._admin().config_set(self._shard_indices(shards), name, value)

    # ------------------------------------------------------------ the ADIOS2 bridge (in the server ranks)
    def bridge_export(self, name: str, engine: str, path: str | os.PathLike[str], tensors: Sequence[str] = (),
                      datasets: Sequence[str] = (), params: dict[str, str] | None = None,
                      dimensions: dict[str, Sequence[str]] | None = None) -> list[str]:
        """Open the export ``name`` on every shard: each shard writes the ``tensors`` and
        ``datasets`` it holds (names, or ``fnmatch`` patterns such as ``"sim.*"``; keys as they
        are, without ensemble prefixes) to its own ADIOS2 ``engine`` ("BP5" file or "SST"
        stream) at ``<path>.shard<k>``, one step per :meth:`bridge_step`. ``params`` are ADIOS2
        engine parameters (over the SST defaults of docs/adios2.md), ``dimensions`` the names of
        a key's dimensions (xarray). ``path`` is made absolute here. Returns each shard's path.
        Raises BadArgumentError (a bad argument, a name in use, a backend without servers) or
        ServerRuntimeError (no ``adios2`` on the server ranks, the engine did not open); a shard
        that had opened is stopped again."""
        spec = {"engine": engine, "path": os.path.abspath(os.fspath(path)), "tensors": list(tensors),
                "datasets": list(datasets), "params": dict(params or {}),
                "dimensions": {k: list(v) for k, v in (dimensions or {}).items()}}
        return [r["path"] for r in self._bridge_open(Op.BRIDGE_EXPORT, name, spec)]

    def bridge_step(self, name: str) -> dict[str, Any]:
        """Write one step of the export ``name``: every shard publishes the chosen keys it holds
        now as one ADIOS2 step. Returns ``{"step": index, "tensors": [...], "datasets": [...],
        "missing": [...]}`` (``missing``: names given plainly that no shard holds now; the step
        is published without them). Raises BadArgumentError for an unknown export, or what a
        shard's write raised (BadArgumentError: a key's dtype or rank changed)."""
        replies = self._bridge(Op.BRIDGE_EXPORT, name, None)
        return {"step": replies[0]["step"],
                **{what: sorted(k for r in replies for k in r[what]) for what in ("tensors", "datasets", "missing")}}

    def bridge_ingest(self, name: str, engine: str, path: str | os.PathLike[str], prefix: str = "",
                      step_keys: bool = False, variables: Sequence[str] = (), timeout: float = 60.0,
                      steps: int | None = None, params: dict[str, str] | None = None) -> None:
        """Start the ingest ``name``: every shard reads the ADIOS2 ``engine`` ("SST" stream or
        "BP5" file) at ``path`` (made absolute here), written by any ADIOS2 program, and stores
        each step's variables (those in ``variables``, names or patterns, when given) as
        tensors ``<prefix><name>``, overwritten at each step, or ``<prefix><name>.<step>`` with
        ``step_keys``; each shard keeps the keys that route to it. Returns once every shard has
        started (the stream is opened on the shards' threads, waiting up to ``timeout`` seconds
        for the writer, as for each step). The ingest ends when the writer closes the stream,
        after ``steps`` steps, or at :meth:`bridge_stop`, which reports how it went. An SST
        writer should wait for every shard's reader (``RendezvousReaderCount`` = the number of
        shards) so that no shard misses the first steps. Raises as :meth:`bridge_export`."""
        typecheck(step_keys, "step_keys", bool)
        spec = {"engine": engine, "path": os.path.abspath(os.fspath(path)), "prefix": prefix,
                "step_keys": step_keys, "variables": list(variables), "timeout_s": timeout, "steps": steps,
                "params": dict(params or {})}
        self._bridge_open(Op.BRIDGE_INGEST, name, spec)

    def bridge_stop(self, name: str, wait: float = 0.0) -> list[dict[str, Any]]:
        """End the export or ingest ``name`` on every shard (an export closes its engine, so
        readers reach the end of the stream; an ingest stops between steps, after running on
        for up to ``wait`` seconds until its stream ends by itself: ``wait`` drains a stream
        whose writer is finishing). Returns each shard's report: ``state`` ("stopped", "ended"
        when the writer closed the stream and every step was stored, "failed"), ``steps``,
        ``problems`` (why it failed, variables it could not store...). Raises
        BadArgumentError when no shard has a bridge ``name``."""
        typecheck(wait, "wait", (int, float))
        return self._bridge(Op.BRIDGE_STOP, name, {"wait_s": float(wait)} if wait else None)

    def _bridge(self, op: Op, name: str, spec: dict[str, Any] | None) -> list[dict[str, Any]]:
        typecheck(name, "name", str)
        key_field(name)
        send = getattr(self._store, "bridge", None)
        if send is None:
            raise BadArgumentError(f"the ADIOS2 bridge runs in the server ranks: it needs the MPI backend "
                                   f"(Client(backend='mpi')), not {self.backend!r}")
        return send(op, name, spec)

    def _bridge_open(self, op: Op, name: str, spec: dict[str, Any]) -> list[dict[str, Any]]:
        """Open a bridge on every shard, all or nothing: when a shard fails, those that opened stop."""
        try:
            return self._bridge(op, name, spec)
        except BadArgumentError as exc:
            if "already" in str(exc):  # the name is in use: what runs under it is not ours to stop
                raise
            self._bridge_cleanup(name)
            raise
        except MpistageError:
            self._bridge_cleanup(name)
            raise

    def _bridge_cleanup(self, name: str) -> None:
        try:
            self._bridge(Op.BRIDGE_STOP, name, None)
        except MpistageError:
            pass  # the shards that failed have no bridge of that name

    # ------------------------------------------------------------ ensembles (SmartRedis names)
    def set_data_source(self, source_id: str) -> None:
        """Read keys with prefix ``source_id`` (one of $SSKEYIN)."""
        typecheck(source_id, "source_id", str)
        if source_id not in self._get_prefixes:
            raise BadArgumentError(f"{source_id!r} is not in SSKEYIN ({self._get_prefixes})")
        self._get_prefix = source_id
        self._prefixes_changed()

    def use_tensor_ensemble_prefix(self, use_prefix: bool) -> None:
        """Whether tensor names get the ensemble prefixes (on by default)."""
        self._use_prefix((Kind.TENSOR,), use_prefix)

    def use_dataset_ensemble_prefix(self, use_prefix: bool) -> None:
        """Whether dataset names get the ensemble prefixes (on by default)."""
        self._use_prefix((Kind.DATASET,), use_prefix)

    def use_list_ensemble_prefix(self, use_prefix: bool) -> None:
        """Whether aggregation list names get the ensemble prefixes (on by default)."""
        self._use_prefix((Kind.LIST,), use_prefix)

    def use_model_ensemble_prefix(self, use_prefix: bool) -> None:
        """Whether model and script names get the ensemble prefixes (off by default)."""
        self._use_prefix((Kind.MODEL, Kind.SCRIPT), use_prefix)

    def _use_prefix(self, kinds: tuple[Kind, ...], use_prefix: bool) -> None:
        typecheck(use_prefix, "use_prefix", bool)
        for kind in kinds:
            self._prefix_use[kind] = use_prefix
        self._prefixes_changed()


def _check_device(device: str) -> str:
    """SmartRedis's device check: a str starting with CPU or GPU (any case; "GPU:1" is "GPU");
    UnknownChoiceError (a TypeError) otherwise."""
    typecheck(device, "device", str)
    device = device.upper()
    for known in ("CPU", "GPU"):
        if device.startswith(known):
            return known
    raise UnknownChoiceError(f"device {device!r} must start with CPU or GPU")


def _check_key_lists(inputs: str | Sequence[str] | None,
                     outputs: str | Sequence[str] | None) -> tuple[list[str], list[str]]:
    """Tensor key arguments as SmartRedis takes them: None, a str or a list of str."""
    checked = []
    for value, what in ((inputs, "inputs"), (outputs, "outputs")):
        keys = [] if value is None else [value] if isinstance(value, str) else value
        typecheck(keys, what, _KEY_LISTS)
        for key in keys:
            typecheck(key, f"an element of {what}", str)
        checked.append(list(keys))
    return checked[0], checked[1]


def _check_model_args(name: str, backend: str, device: str, batch_size: int, min_batch_size: int,
                      min_batch_timeout: int, tag: str, inputs: Any, outputs: Any) -> tuple[str, str]:
    """SmartRedis's checks of set_model's arguments; returns (backend, device) normalized."""
    typecheck(name, "name", str)
    typecheck(backend, "backend", str)
    for value, what in ((batch_size, "batch_size"), (min_batch_size, "min_batch_size"),
                        (min_batch_timeout, "min_batch_timeout")):
        typecheck(value, what, int)
    typecheck(tag, "tag", str)
    _check_key_lists(inputs, outputs)
    backend = backend.upper()
    if backend not in SMARTREDIS_BACKENDS:
        raise UnknownChoiceError(f"backend {backend!r} is unknown (SmartRedis knows "
                                 f"{', '.join(SMARTREDIS_BACKENDS)})")
    if batch_size == 0 and min_batch_size > 0:
        raise BadArgumentError("batch_size must be non-zero if min_batch_size is used")
    if min_batch_size == 0 and min_batch_timeout > 0:
        raise BadArgumentError("min_batch_size must be non-zero if min_batch_timeout is used")
    if min_batch_size > 0 and min_batch_timeout == 0:
        warnings.warn(f"model {name!r}: min_batch_size={min_batch_size} without min_batch_timeout: a "
                      "request waits until that many have arrived, however long that takes",
                      RuntimeWarning, stacklevel=3)
    return backend, _check_device(device)
