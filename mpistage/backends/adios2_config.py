"""How the ADIOS2 backend is configured: the engine (SST stream or BP5 file), the path, the role
(writer or reader), the timeout, engine parameters with this backend's SST defaults; the
connection file that names them; and the registry's factory.

Nothing here imports ``adios2``: the package is needed only when a backend is opened.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._mpi.connfile import ADDRESS_ENV, write_address
from ..errors import BadArgumentError
from .base import Backend

ENGINES = ("SST", "BP5")
MODES = ("writer", "reader")

#: SST parameters this backend sets unless ``params`` overrides them (docs/adios2.md says why).
SST_DEFAULTS: dict[str, str] = {
    "RendezvousReaderCount": "0",  # the writer never waits at open for a reader that may not come
    "QueueLimit": "8",             # at most 8 steps kept for slow readers (SST's default: no bound)
    "QueueFullPolicy": "Discard",  # a full queue drops steps instead of blocking the writer forever
    "DataTransport": "WAN",        # sockets; RDMA needs libfabric, MPI needs MPICH: neither in the wheel
}

#: Seconds a reader waits for a writer to appear and for each step, unless told otherwise.
DEFAULT_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Adios2Options:
    """One ADIOS2 engine opened in one role.

    ``engine``: "SST" (a stream between running programs) or "BP5" (a file). ``path``: the
    stream's name (SST writes ``<path>.sst`` for readers to find) or the file (a ``.bp``
    directory). ``mode``: "writer" (puts; ``flush()`` ends the step) or "reader" (gets; the first
    access begins a step, ``flush()`` ends it). ``timeout_s``: how long a reader waits for the
    writer to appear and for each step (a step that does not come raises StepTimeoutError).
    ``params``: ADIOS2 engine parameters, over :data:`SST_DEFAULTS` for SST. ``dimensions``: per
    key, the dimension names written to the variable's ``dimensions`` attribute (xarray); by
    default ``<key>_dim0 <key>_dim1 ...``.
    """

    engine: str
    path: str
    mode: str
    timeout_s: float = DEFAULT_TIMEOUT_S
    params: dict[str, str] = field(default_factory=dict)
    dimensions: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        engine = str(self.engine).upper()
        if engine not in ENGINES:
            raise BadArgumentError(f"ADIOS2 engine {self.engine!r} is not supported; use one of {ENGINES}")
        object.__setattr__(self, "engine", engine)
        if self.mode not in MODES:
            raise BadArgumentError(f"ADIOS2 mode {self.mode!r}: use 'writer' or 'reader'")
        if not isinstance(self.path, str) or not self.path:
            raise BadArgumentError("the ADIOS2 backend needs a path (stream name or .bp file)")
        if not self.timeout_s > 0:
            raise BadArgumentError(f"timeout_s must be positive, not {self.timeout_s!r}")
        object.__setattr__(self, "params", {str(k): str(v) for k, v in self.params.items()})
        object.__setattr__(self, "dimensions", {k: tuple(map(str, v)) for k, v in self.dimensions.items()})

    def engine_params(self) -> dict[str, str]:
        """The parameters the engine is opened with: defaults, the reader's open timeout, ``params``."""
        out = dict(SST_DEFAULTS) if self.engine == "SST" else {}
        if self.mode == "reader":
            out["OpenTimeoutSecs"] = str(int(max(1, round(self.timeout_s))))
        out.update(self.params)
        return out

    def to_json(self) -> dict[str, Any]:
        """The connection file's fields (besides ``"backend": "adios2"``)."""
        return {"engine": self.engine, "path": self.path, "mode": self.mode, "timeout_s": self.timeout_s,
                "params": self.params, "dimensions": {k: list(v) for k, v in self.dimensions.items()}}


def read_options(path: str | os.PathLike[str]) -> Adios2Options:
    """The options an ADIOS2 connection file names; a relative ``path`` in it is taken relative
    to the file's directory. Raises BadArgumentError for a file that is not one."""
    try:
        data = json.loads(Path(path).read_text())
        if data.get("backend") != "adios2":
            raise BadArgumentError(f"{path} names backend {data.get('backend')!r}, not 'adios2'")
        target = str(data["path"])
        if not os.path.isabs(target):
            target = str(Path(path).resolve().parent / target)
        return Adios2Options(str(data["engine"]), target, str(data["mode"]),
                             float(data.get("timeout_s", DEFAULT_TIMEOUT_S)), dict(data.get("params", {})),
                             dict(data.get("dimensions", {})))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BadArgumentError(f"{path} is not an ADIOS2 connection file: {exc}") from exc


@dataclass(frozen=True)
class _ConnectionText:
    """What ``write_address`` needs of an address: its text."""

    options: Adios2Options

    def to_json(self) -> str:
        return json.dumps({"backend": "adios2", **self.options.to_json()}, indent=1)


def write_options(path: str | os.PathLike[str], options: Adios2Options) -> None:
    """Write an ADIOS2 connection file (atomically, mode 0600) for ``Client(address=path)``."""
    write_address(path, _ConnectionText(options))  # type: ignore[arg-type]


def adios2_backend(engine: str, path: str, mode: str, timeout_s: float = DEFAULT_TIMEOUT_S,
                   params: dict[str, str] | None = None,
                   dimensions: dict[str, tuple[str, ...]] | None = None) -> Backend:
    """A :class:`Backend` over one ADIOS2 engine, for ``Client(backend=...)`` (arguments as in
    :class:`Adios2Options`). Opens the engine now: a reader waits up to ``timeout_s`` for the
    writer. Raises ImportError naming the package when ``adios2`` is not installed."""
    options = Adios2Options(engine, path, mode, timeout_s, dict(params or {}), dict(dimensions or {}))
    from .adios2_store import open_store  # noqa: PLC0415 (adios2 is optional)
    return open_store(options)


def create(address: str | None, comm: Any) -> Backend:
    """The registry's factory: the engine an ADIOS2 connection file (``address``, else
    ``$MPISTAGE_ADDRESS``) names. ``comm`` is not used: the ``adios2`` wheel has no MPI (see
    ``mpistage.backends.adios2_decomp`` for arrays split over ranks)."""
    path = address or os.environ.get(ADDRESS_ENV)
    if not path:
        raise BadArgumentError(
            "the adios2 backend needs a connection file (Client(address=...) or $MPISTAGE_ADDRESS) "
            "written by mpistage.backends.adios2_config.write_options, or "
            "Client(backend=adios2_backend(engine, path, mode))")
    from .adios2_store import open_store  # noqa: PLC0415 (adios2 is optional)
    return open_store(read_options(path))
