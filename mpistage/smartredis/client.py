"""SmartRedis's ``Client`` over mpistage: the constructor forms, ``SSDB`` and ``ConfigOptions``,
and the calls SmartRedis has beyond :class:`mpistage.Client` (``*_multigpu``, server and
cluster information, logging).

``SSDB`` (or ``address``) names the servers' connection file (``mpistage start --dir D`` writes
``D/address``). In an MPMD job (``mpiexec -n S mpistage-server : -n N python app.py``) the
servers are part of the job and ``SSDB`` is not needed. An *address* in the server calls
(``get_db_node_info`` and the like) is either that connection file, which stands for every
shard, or ``"shard:<i>"`` for shard ``i``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from .._mpi.connfile import ADDRESS_ENV, launched_by_mpiexec
from ..client import Client as _Client
from ..errors import BadArgumentError, KeyNotFoundError, ServerUnreachableError, typecheck
from .configoptions import ConfigOptions
from .dataset import Dataset
from .srobject import SRObject

_ADDRESS_KWARGS = {"cluster", "address", "logger_name"}
_STANDARD_KWARGS = {"config_options", "logger_name"}
_MPISTAGE_KWARGS = {"comm", "backend"}


class Client(_Client, SRObject):
    """A SmartRedis client of the mpistage servers. Two forms, as in SmartRedis 0.6::

        Client(config_options: ConfigOptions | None = None, logger_name: str = "Default")
        Client(cluster: bool, address: str | None = None, logger_name: str = "Default")

    The first reads ``SSDB``, ``SSKEYIN`` and ``SSKEYOUT`` from ``config_options`` (the
    environment when None); the second sets ``SSDB`` to ``address`` when given, as SmartRedis
    does. ``SSDB`` falls back to ``$MPISTAGE_ADDRESS``; without either (and outside an MPMD job)
    the constructor raises RedisConnectionError, as SmartRedis does without ``SSDB``.
    ``cluster`` is ignored (the servers are always sharded). mpistage's own keywords ``comm``
    and ``backend`` are accepted in both forms (see :class:`mpistage.Client`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        extra = {k: kwargs.pop(k) for k in _MPISTAGE_KWARGS & kwargs.keys()}
        if (args and isinstance(args[0], bool)) or (not args and kwargs.keys() & {"cluster", "address"}):
            settings, logger_name = self._address_form(*args, **kwargs)
        elif not args or args[0] is None or isinstance(args[0], ConfigOptions):
            settings, logger_name = self._standard_form(*args, **kwargs)
        else:
            raise TypeError(f"Client's first argument is a ConfigOptions, None or a bool, not {type(args[0]).__name__}")
        _Client.__init__(self, address=_servers(settings("SSDB")), logger_name=logger_name, **extra)
        SRObject.__init__(self, logger_name)
        self._set_prefixes(settings("SSKEYOUT") or "", settings("SSKEYIN") or "")
        self._ssdb = settings("SSDB")

    @staticmethod
    def _address_form(cluster: bool, address: str | None = None, logger_name: str = "Default",
                      **unexpected: Any) -> tuple[Callable[[str], str | None], str]:
        if unexpected:
            raise TypeError(f"Client() got an unexpected keyword argument {next(iter(unexpected))!r}")
        typecheck(cluster, "cluster", bool)
        if address is not None:
            typecheck(address, "address", str)
            os.environ["SSDB"] = address
        return os.environ.get, logger_name

    @staticmethod
    def _standard_form(config_options: ConfigOptions | None = None, logger_name: str = "Default",
                       **unexpected: Any) -> tuple[Callable[[str], str | None], str]:
        if unexpected:
            raise TypeError(f"Client() got an unexpected keyword argument {next(iter(unexpected))!r}")
        if config_options is None:
            return os.environ.get, logger_name
        typecheck(config_options, "config_options", ConfigOptions)
        return config_options.string_or_none, logger_name

    # ------------------------------------------------------------ datasets as this module's class
    def get_dataset(self, name: str) -> Dataset:
        """The dataset stored under ``name`` (see :meth:`mpistage.Client.get_dataset`)."""
        return Dataset.adopt(super().get_dataset(name))

    def get_dataset_list_range(self, list_name: str, start_index: int, end_index: int) -> list[Dataset]:
        """Datasets at positions ``start_index..end_index`` of the list (inclusive)."""
        return [Dataset.adopt(d) for d in super().get_dataset_list_range(list_name, start_index, end_index)]

    # ------------------------------------------------------------ multi-GPU forms
    def set_model_multigpu(self, name: str, model: Any, backend: str, first_gpu: int, num_gpus: int,
                           batch_size: int = 0, min_batch_size: int = 0, min_batch_timeout: int = 0,
                           tag: str = "", inputs: str | Sequence[str] | None = None,
                           outputs: str | Sequence[str] | None = None) -> None:
        """:meth:`set_model` on ``device="GPU"``: each server rank runs it on its own GPU (see
        docs/smartredis.md), on the CPU with a warning where it has none."""
        _check_gpus(first_gpu, num_gpus)
        self.set_model(name, model, backend, "GPU", batch_size, min_batch_size, min_batch_timeout, tag,
                       inputs, outputs)

    def set_model_from_file_multigpu(self, name: str, model_file: str, backend: str, first_gpu: int,
                                     num_gpus: int, batch_size: int = 0, min_batch_size: int = 0,
                                     min_batch_timeout: int = 0, tag: str = "",
                                     inputs: str | Sequence[str] | None = None,
                                     outputs: str | Sequence[str] | None = None) -> None:
        """:meth:`set_model_from_file` on ``device="GPU"`` (as :meth:`set_model_multigpu`)."""
        _check_gpus(first_gpu, num_gpus)
        self.set_model_from_file(name, model_file, backend, "GPU", batch_size, min_batch_size,
                                 min_batch_timeout, tag, inputs, outputs)

    def run_model_multigpu(self, name: str, offset: int, first_gpu: int, num_gpus: int,
                           inputs: str | Sequence[str] | None = None,
                           outputs: str | Sequence[str] | None = None) -> None:
        """:meth:`run_model` (the server rank that runs it uses its own GPU)."""
        typecheck(offset, "offset", int)
        _check_gpus(first_gpu, num_gpus)
        self.run_model(name, inputs, outputs)

    def delete_model_multigpu(self, name: str, first_gpu: int, num_gpus: int) -> None:
        """:meth:`delete_model`."""
        _check_gpus(first_gpu, num_gpus)
        self.delete_model(name)

    def set_script_multigpu(self, name: str, script: str, first_gpu: int, num_gpus: int) -> None:
        """:meth:`set_script` on ``device="GPU"`` (as :meth:`set_model_multigpu`)."""
        _check_gpus(first_gpu, num_gpus)
        self.set_script(name, script, "GPU")

    def set_script_from_file_multigpu(self, name: str, file: str, first_gpu: int, num_gpus: int) -> None:
        """:meth:`set_script_from_file` on ``device="GPU"``."""
        _check_gpus(first_gpu, num_gpus)
        self.set_script_from_file(name, file, "GPU")

    def set_function_multigpu(self, name: str, function: Callable[..., Any], first_gpu: int,
                              num_gpus: int) -> None:
        """:meth:`set_function` on ``device="GPU"``."""
        _check_gpus(first_gpu, num_gpus)
        self.set_function(name, function, "GPU")

    def run_script_multigpu(self, name: str, fn_name: str, inputs: str | Sequence[str],
                            outputs: str | Sequence[str], offset: int, first_gpu: int, num_gpus: int) -> None:
        """:meth:`run_script`."""
        typecheck(offset, "offset", int)
        _check_gpus(first_gpu, num_gpus)
        self.run_script(name, fn_name, inputs, outputs)

    def delete_script_multigpu(self, name: str, first_gpu: int, num_gpus: int) -> None:
        """:meth:`delete_script`."""
        _check_gpus(first_gpu, num_gpus)
        self.delete_script(name)

    def set_model_chunk_size(self, chunk_size: int) -> None:
        """Accepted and unnecessary: models travel as one MPI message of any size up to 2 GiB."""
        typecheck(chunk_size, "chunk_size", int)
        if chunk_size <= 0:
            raise BadArgumentError("chunk_size must be positive")

    # ------------------------------------------------------------ servers by address
    def _shards(self, addresses: list[str]) -> list[int]:
        typecheck(addresses, "addresses", list)
        shards: list[int] = []
        for address in addresses:
            typecheck(address, "an element of addresses", str)
            shards += self._shards_of(address)
        return shards

    def _shards_of(self, address: str) -> list[int]:
        if address.startswith("shard:") and address[6:].isdigit() and int(address[6:]) < self.nshards:
            return [int(address[6:])]
        if self._ssdb and os.path.realpath(address) == os.path.realpath(_servers(self._ssdb) or ""):
            return list(range(self.nshards))
        raise BadArgumentError(f"{address!r} is not an address of these servers: give the connection "
                               f"file ({self._ssdb}) or 'shard:<i>' with i < {self.nshards}")

    def get_db_node_info(self, addresses: list[str]) -> list[dict[str, Any]]:
        """Per shard the addresses name (the connection file: every shard), its statistics."""
        info = self.get_server_info()
        return [info[s] for s in self._shards(addresses)]

    def get_db_cluster_info(self, addresses: list[str]) -> list[dict[str, Any]]:
        """Per shard the addresses name, Redis-Cluster-like facts: state, size, its slot range."""
        return [{"cluster_state": "ok", "cluster_size": self.nshards, "cluster_known_nodes": self.nshards,
                 "shard": s} for s in self._shards(addresses)]

    def get_ai_info(self, address: list[str], key: str, reset_stat: bool = False) -> list[dict[str, Any]]:
        """Per shard the addresses name, the run statistics of model or script ``key`` (taken
        as it is, no prefix), with RedisAI's field names. ``reset_stat=True`` is not supported
        (the statistics count from the model's last set)."""
        typecheck(key, "key", str)
        typecheck(reset_stat, "reset_stat", bool)
        if reset_stat:
            raise BadArgumentError("mpistage's servers do not reset run statistics")
        info = self.get_server_info()
        out = []
        for s in self._shards(address):
            engine = info[s].get("engine", {})
            entry, kind = engine.get("models", {}).get(key), "MODEL"
            if entry is None:
                entry, kind = engine.get("scripts", {}).get(key), "SCRIPT"
            if entry is None:
                raise KeyNotFoundError(f"no model or script {key!r} on shard {s}")
            out.append({"key": key, "type": kind, "backend": entry.get("backend", "TORCH"),
                        "device": entry["device"], "tag": entry.get("tag", ""),
                        "duration": round(1e6 * entry["compute_s"]), "samples": entry["rows"],
                        "calls": entry["requests"], "errors": entry["errors"], "mpistage": entry})
        return out

    def flush_db(self, addresses: list[str]) -> None:
        """Remove every key from the shards the addresses name: tensors, datasets, lists, models
        and scripts (SmartRedis's FLUSHDB; RedisAI's models and scripts are keys too)."""
        self.flush_shards(sorted(set(self._shards(addresses))))

    def config_get(self, expression: str, address: str) -> dict[str, str]:
        """The settings of the shard at ``address`` (the connection file: shard 0) whose names
        match the glob ``expression``: ``maxmemory`` (bytes, 0: no cap), ``model-timeout`` (ms),
        ``shards``, ``shard`` (docs/smartredis.md, "Server settings"); no match: ``{}``."""
        typecheck(expression, "expression", str)
        typecheck(address, "address", str)
        return self.get_server_config(expression, self._shards_of(address)[0])

    def config_set(self, config_param: str, value: str, address: str) -> None:
        """Change ``maxmemory`` or ``model-timeout`` on the shards ``address`` names (the
        connection file: every shard); any other name raises RedisReplyError."""
        typecheck(config_param, "config_param", str)
        typecheck(value, "value", str)
        typecheck(address, "address", str)
        self.set_server_config(config_param, value, self._shards_of(address))

    def save(self, addresses: list[str] | None = None) -> list[str]:  # type: ignore[override]
        """Snapshot every shard to the servers' ``--snapshot`` directory (``addresses``, when
        given, is checked; each shard writes its own file); returns the files."""
        if addresses is not None:
            self._shards(addresses)
        return super().save()


def _check_gpus(first_gpu: int, num_gpus: int) -> None:
    typecheck(first_gpu, "first_gpu", int)
    typecheck(num_gpus, "num_gpus", int)
    if first_gpu < 0:
        raise BadArgumentError("first_gpu must be a non-negative integer")
    if num_gpus < 1:
        raise BadArgumentError("num_gpus must be a positive integer")


def _servers(ssdb: str | None) -> str | None:
    """The connection file a client reaches its servers through: ``SSDB`` (its first entry),
    else ``$MPISTAGE_ADDRESS``; None in an MPMD job, whose servers are part of the job."""
    if launched_by_mpiexec():
        from .._mpi.links import is_mpmd_app

        if is_mpmd_app():
            return None
    path = (ssdb or "").replace(";", ",").split(",")[0].strip() or os.environ.get(ADDRESS_ENV)
    if not path:
        raise ServerUnreachableError("Could not connect to database. $SSDB not set")
    if not os.path.isfile(path):
        raise ServerUnreachableError(f"SSDB={path!r} is not an mpistage connection file "
                                     "(mpistage start --dir D writes D/address)")
    return path
