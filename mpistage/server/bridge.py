"""The ADIOS2 bridge inside a shard: named exports (chosen keys of this shard's store written to a
BP5 file or SST stream, one ADIOS2 step per client call) and ingests (an SST stream or BP5 file
read step by step into the store).

Each shard writes its own engine, ``<path>.shard<k>``, with the chosen keys it holds; each shard
reads an ingested stream itself and keeps the variables whose store key routes to it
(docs/adios2.md, "The bridge", says why). ADIOS2 calls run on a bridge's own thread; the store is
touched only on the loop thread (an export takes its values there; an ingest hands each step over
with ``loop.call_soon`` and waits until it is stored before reading the next). ``adios2`` is
imported on the first bridge's thread (it takes seconds: the package imports torch); without
it a bridge operation fails with ServerRuntimeError.

Wire (docs/adios2.md, "The bridge"): every request's first field is the bridge's name; every
reply is one field of UTF-8 JSON.

- ``BRIDGE_EXPORT [name, spec]`` opens an export (reply when the writer is open);
  ``BRIDGE_EXPORT [name]`` writes one step (reply when it is published).
- ``BRIDGE_INGEST [name, spec]`` starts an ingest (reply at once; the stream is opened on its thread).
- ``BRIDGE_STOP [name]`` or ``[name, {"wait_s": s}]`` ends either (an ingest may first run on
  for up to ``s`` seconds until its stream ends by itself); reply with its report when done.
"""

from __future__ import annotations

import importlib.util
import json
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Protocol

import numpy as np

from ..dataset import Dataset
from ..errors import BadArgumentError, MpistageError, ServerRuntimeError
from ..protocol import Op, as_bytes_view, decode_key, describe, unpack_metadata
from ..router import shard_of
from .handlers import Handler, Reply, Request
from .store import ShardStore, StoredTensor

#: An export holds at most this many steps taken but not yet written (each pins its values).
MAX_PENDING_STEPS = 4
#: How long a shard that is shutting down waits for each bridge's thread.
CLOSE_SECONDS = 10.0
#: The longest a stop may wait for an ingest to end by itself.
MAX_STOP_WAIT_S = 3600.0
#: How many problems (variables not stored) a bridge's report keeps.
MAX_PROBLEMS = 16
ENGINES = ("BP5", "SST")
WILDCARDS = frozenset("*?[")


class BridgeLoop(Protocol):
    """What the bridge needs of the progress loop."""

    def call_soon(self, fn: Callable[[], None]) -> None: ...

    def defer(self, req: Request, rep: Reply) -> None: ...


def shard_path(path: str, shard: int) -> str:
    """The file or stream shard ``shard`` exports to: ``<path>.shard<k>``."""
    return f"{path}.shard{shard}"


def json_reply(value: Any) -> Reply:
    return Reply(fields=[json.dumps(value).encode()])


NO_ADIOS2 = ("the ADIOS2 bridge needs the adios2 package on the server ranks "
             "(pip install adios2, or mpistage's 'adios2' extra)")


def _check_adios2() -> None:
    """ServerRuntimeError now, on the loop thread, when ``adios2`` is not installed (found, not
    imported: importing it takes seconds, as it imports torch, and happens on the bridge's thread)."""
    if importlib.util.find_spec("adios2") is None:
        raise ServerRuntimeError(NO_ADIOS2)


def _adios2_side() -> Any:
    """The ADIOS2 end of the bridge (imports ``adios2``; called on a bridge's thread)."""
    try:
        from ..backends import adios2_bridge  # noqa: PLC0415 (adios2 is optional)
    except ImportError as exc:
        raise ServerRuntimeError(f"{NO_ADIOS2}: {exc}") from exc
    return adios2_bridge


# ---------------------------------------------------------------- specs (client JSON, checked)
def _spec(raw: memoryview, allowed: set[str]) -> dict[str, Any]:
    try:
        spec = json.loads(bytes(raw).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadArgumentError(f"a bridge spec must be UTF-8 JSON: {exc}") from exc
    if not isinstance(spec, dict):
        raise BadArgumentError("a bridge spec must be a JSON object")
    unknown = set(spec) - allowed
    if unknown:
        raise BadArgumentError(f"unknown bridge spec fields {sorted(unknown)}; known: {sorted(allowed)}")
    return spec


def _text(spec: dict[str, Any], name: str, default: str | None = None) -> str:
    value = spec.get(name, default)
    if not isinstance(value, str) or (default is None and not value):
        raise BadArgumentError(f"bridge spec field {name!r} must be a non-empty string")
    return value


def _texts(spec: dict[str, Any], name: str) -> tuple[str, ...]:
    value = spec.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise BadArgumentError(f"bridge spec field {name!r} must be a list of non-empty strings")
    return tuple(value)


def _params(spec: dict[str, Any]) -> dict[str, str]:
    value = spec.get("params", {})
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise BadArgumentError("bridge spec field 'params' must map strings to strings")
    return value


def _engine(spec: dict[str, Any]) -> str:
    engine = _text(spec, "engine").upper()
    if engine not in ENGINES:
        raise BadArgumentError(f"ADIOS2 engine {engine!r} is not supported by the bridge; use one of {ENGINES}")
    return engine


@dataclass(frozen=True)
class ExportSpec:
    """What an export writes: ``tensors`` and ``datasets`` are names or ``fnmatch`` patterns."""

    engine: str
    path: str
    tensors: tuple[str, ...]
    datasets: tuple[str, ...]
    params: dict[str, str]
    dimensions: dict[str, tuple[str, ...]]

    @classmethod
    def parse(cls, raw: memoryview) -> ExportSpec:
        """Raises BadArgumentError for a spec that is not one."""
        spec = _spec(raw, {"engine", "path", "tensors", "datasets", "params", "dimensions"})
        dims = spec.get("dimensions", {})
        if not isinstance(dims, dict) or not all(isinstance(v, list) and all(isinstance(d, str) for d in v)
                                                 for v in dims.values()):
            raise BadArgumentError("bridge spec field 'dimensions' must map keys to lists of names")
        out = cls(_engine(spec), _text(spec, "path"), _texts(spec, "tensors"), _texts(spec, "datasets"),
                  _params(spec), {str(k): tuple(v) for k, v in dims.items()})
        if not out.tensors and not out.datasets:
            raise BadArgumentError("an export needs some tensors or datasets to write")
        return out


@dataclass(frozen=True)
class IngestSpec:
    """What an ingest reads and where its variables go: ``<prefix><name>``, or
    ``<prefix><name>.<step>`` with ``step_keys``; ``variables`` (names or patterns) limits it."""

    engine: str
    path: str
    prefix: str
    step_keys: bool
    variables: tuple[str, ...]
    timeout_s: float
    steps: int | None
    params: dict[str, str]

    @classmethod
    def parse(cls, raw: memoryview) -> IngestSpec:
        """Raises BadArgumentError for a spec that is not one."""
        spec = _spec(raw, {"engine", "path", "prefix", "step_keys", "variables", "timeout_s", "steps", "params"})
        timeout, steps, step_keys = spec.get("timeout_s", 60.0), spec.get("steps"), spec.get("step_keys", False)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise BadArgumentError(f"bridge spec field 'timeout_s' must be a positive number, not {timeout!r}")
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
            raise BadArgumentError(f"bridge spec field 'steps' must be a positive integer or null, not {steps!r}")
        if not isinstance(step_keys, bool):
            raise BadArgumentError("bridge spec field 'step_keys' must be true or false")
        return cls(_engine(spec), _text(spec, "path"), _text(spec, "prefix", ""), step_keys,
                   _texts(spec, "variables"), float(timeout), steps, _params(spec))


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatchcase(name, p) if WILDCARDS & set(p) else name == p for p in patterns)


# ---------------------------------------------------------------- one bridge each
class _Bridge:
    """What exports and ingests share: a name, a state and the problems met."""

    kind = ""

    def __init__(self, name: str, engine: str, path: str) -> None:
        self.name, self.engine, self.path = name, engine, path
        self.state = "opening"
        self.steps = 0
        self.problems: list[str] = []

    def problem(self, text: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)

    def report(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "engine": self.engine, "path": self.path,
                "state": self.state, "steps": self.steps, "problems": list(self.problems)}

    def stop(self, done: Callable[[], None], wait_s: float = 0.0) -> None:
        """End the bridge on its thread, then call ``done``; an ingest first waits up to ``wait_s``
        seconds for its stream to end by itself."""
        raise NotImplementedError

    def join(self, timeout: float) -> None:
        raise NotImplementedError


class Export(_Bridge):
    """An export's writer and its thread: open, steps and close run there in request order."""

    kind = "export"

    def __init__(self, name: str, spec: ExportSpec, path: str) -> None:
        super().__init__(name, spec.engine, path)
        self.spec = spec
        self.writer: Any = None
        self.pending = 0
        self._work: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._serve, name=f"mpistage-export-{name}", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while (job := self._work.get()) is not None:
            job()

    def submit(self, job: Callable[[], None]) -> None:
        self._work.put(job)

    def open(self, opened: Callable[[MpistageError | None], None]) -> None:
        def work() -> None:
            try:
                spec = self.spec
                self.writer = _adios2_side().ExportWriter(self.engine, self.path, spec.params, spec.dimensions)
                self.state = "open"
                opened(None)
            except Exception as exc:  # reported to the caller; the export is then forgotten
                self.state = "failed"
                opened(_as_error(exc, f"opening ADIOS2 {self.engine} {self.path!r}"))
        self.submit(work)

    def stop(self, done: Callable[[], None], wait_s: float = 0.0) -> None:
        def work() -> None:
            try:
                if self.writer is not None:
                    self.writer.close()
                self.state = "stopped"
            except Exception as exc:  # the report says so
                self.state = "failed"
                self.problem(f"close: {exc}")
            done()
        self.submit(work)
        self._work.put(None)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


class Ingest(_Bridge):
    """An ingest's thread: open the reader, then per step read the variables this shard keeps,
    hand them to the loop thread (``store_step``) and wait until they are stored."""

    kind = "ingest"

    def __init__(self, name: str, spec: IngestSpec, owned: Callable[[str], bool],
                 hand_over: Callable[[Callable[[], None]], None], store_step: Callable[[Ingest, dict], None]) -> None:
        super().__init__(name, spec.engine, spec.path)
        self.spec = spec
        self.owned = owned
        self.hand_over = hand_over
        self.store_step = store_step
        self.tensors_put = 0
        self.last_step = -1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"mpistage-ingest-{self.name}",
                                        daemon=True)
        self._thread.start()

    def key_of(self, name: str, step: int) -> str | None:
        """The store key of variable ``name`` at ``step``, or None when this shard does not keep it."""
        spec = self.spec
        if spec.variables and not _matches(name, spec.variables):
            return None
        key = f"{spec.prefix}{name}.{step}" if spec.step_keys else f"{spec.prefix}{name}"
        return key if self.owned(key) else None

    def _run(self) -> None:
        reader = None
        try:
            reader = _adios2_side().IngestReader(self.engine, self.path, self.spec.timeout_s, self.spec.params)
            self.state = "running"
            while self.spec.steps is None or self.steps < self.spec.steps:
                got = reader.next_step(self._stop.is_set, self.key_of)
                if got is None or self._stop.is_set():
                    break
                self.last_step, arrays = got
                stored = threading.Event()
                self.hand_over(lambda arrays=arrays, stored=stored: self._stored(arrays, stored))
                while not stored.wait(0.2):
                    if self._stop.is_set():
                        return
                reader.release()
                self.steps += 1
                for name, why in reader.skipped.items():
                    self.problem(f"variable {name!r} not ingested: {why}")
                reader.skipped.clear()
            self.state = "ended" if reader.ended else "stopped"
        except Exception as exc:  # the report says why the ingest ended
            self.state = "failed"
            self.problem(str(_as_error(exc, f"ingesting ADIOS2 {self.engine} {self.path!r}")))
        finally:
            if self.state in ("opening", "running"):
                self.state = "stopped"
            if reader is not None:
                try:
                    reader.close()
                except Exception as exc:  # the report says so
                    self.problem(f"close: {exc}")

    def _stored(self, arrays: dict[str, np.ndarray], stored: threading.Event) -> None:
        try:
            self.store_step(self, arrays)
        finally:
            stored.set()

    def stop(self, done: Callable[[], None], wait_s: float = 0.0) -> None:
        def wait() -> None:
            self.join(wait_s)  # the stream may end by itself meanwhile (state "ended")
            self._stop.set()
            self.join(CLOSE_SECONDS + self.spec.timeout_s)
            done()
        threading.Thread(target=wait, name=f"mpistage-ingest-stop-{self.name}", daemon=True).start()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)


def _as_error(exc: BaseException, what: str) -> MpistageError:
    if isinstance(exc, MpistageError):
        return exc
    return ServerRuntimeError(f"{what}: {type(exc).__name__}: {exc}")


# ---------------------------------------------------------------- the handlers
@dataclass
class BridgeHandlers:
    """BRIDGE_EXPORT, BRIDGE_INGEST and BRIDGE_STOP of one shard, and its bridges by name."""

    shard: int
    nshards: int
    store: ShardStore
    loop: BridgeLoop
    bridges: dict[str, _Bridge] = field(default_factory=dict)

    def table(self) -> dict[int, Handler]:
        return {Op.BRIDGE_EXPORT: self.export, Op.BRIDGE_INGEST: self.ingest, Op.BRIDGE_STOP: self.stop}

    def report(self) -> dict[str, Any]:
        """Every bridge's report, by name."""
        return {name: b.report() for name, b in self.bridges.items()}

    def _name(self, req: Request, counts: tuple[int, ...]) -> str:
        if len(req.fields) not in counts:
            raise BadArgumentError(f"{Op(req.header.code).name} takes {' or '.join(map(str, counts))} fields "
                                   f"(the bridge's name, then its spec), got {len(req.fields)}")
        return decode_key(req.fields[0])

    def _free(self, name: str) -> None:
        if name in self.bridges:
            bridge = self.bridges[name]
            raise BadArgumentError(f"shard {self.shard} has a bridge {name!r} already ({bridge.kind}, "
                                   f"{bridge.state}): stop it first (bridge_stop)")

    # ------------------------------------------------------------ export
    def export(self, req: Request) -> Reply | None:
        name = self._name(req, (1, 2))
        if len(req.fields) == 1:
            return self._export_step(req, name)
        spec = ExportSpec.parse(req.fields[1])
        self._free(name)
        _check_adios2()
        export = Export(name, spec, shard_path(spec.path, self.shard))
        self.bridges[name] = export

        def opened(error: MpistageError | None) -> None:
            if error is None:
                self.loop.defer(req, json_reply({"shard": self.shard, "path": export.path}))
                return
            self.loop.call_soon(lambda: self._forget(name, export))
            self.loop.defer(req, Reply.error(error))
        export.open(opened)
        return None

    def _forget(self, name: str, bridge: _Bridge) -> None:
        if self.bridges.get(name) is bridge:
            del self.bridges[name]
            bridge.stop(lambda: None)

    def _export_step(self, req: Request, name: str) -> None:
        export = self.bridges.get(name)
        if not isinstance(export, Export):
            raise BadArgumentError(f"no export {name!r} on shard {self.shard}"
                                   + (" (that name is an ingest)" if export is not None else ""))
        if export.pending >= MAX_PENDING_STEPS:
            raise ServerRuntimeError(f"export {name!r} has {export.pending} steps waiting to be written "
                                     "(ADIOS2 is slower than the steps come): try again")
        tensors, missing = self._chosen(self.store.tensors, export.spec.tensors)
        datasets, missing_ds = self._chosen(self.store.datasets, export.spec.datasets)
        arrays = {key: t.array() for key, t in tensors.items()}
        sets = {key: _dataset(key, ds.tensors, ds.metadata) for key, ds in datasets.items()}
        export.pending += 1

        def work() -> None:
            try:
                if export.writer is None:
                    raise BadArgumentError(f"export {name!r} is not open (its open failed)")
                step = export.writer.write(arrays, sets)
                export.steps += 1
                rep = json_reply({"shard": self.shard, "step": step, "tensors": sorted(arrays),
                                  "datasets": sorted(sets), "missing": missing + missing_ds})
            except Exception as exc:  # this step failed; the export goes on
                export.problem(f"step {export.steps}: {exc}")
                rep = Reply.error(_as_error(exc, f"export {name!r}"))
            self.loop.call_soon(lambda: setattr(export, "pending", export.pending - 1))
            self.loop.defer(req, rep)
        export.submit(work)

    def _chosen(self, table: dict[str, Any], patterns: tuple[str, ...]) -> tuple[dict[str, Any], list[str]]:
        """The values of ``table`` that ``patterns`` choose, and the plain names among them that
        route to this shard but are not stored (taken now, on the loop thread: stored values are
        never changed in place, so the writer thread may read them later)."""
        chosen: dict[str, Any] = {}
        missing: list[str] = []
        for pattern in patterns:
            if WILDCARDS & set(pattern):
                chosen.update((k, v) for k, v in table.items() if fnmatchcase(k, pattern))
            elif pattern in table:
                chosen[pattern] = table[pattern]
            elif shard_of(pattern, self.nshards) == self.shard:
                missing.append(pattern)
        return chosen, missing

    # ------------------------------------------------------------ ingest
    def ingest(self, req: Request) -> Reply:
        name = self._name(req, (2,))
        spec = IngestSpec.parse(req.fields[1])
        self._free(name)
        _check_adios2()
        ingest = Ingest(name, spec, lambda key: shard_of(key, self.nshards) == self.shard,
                        self.loop.call_soon, self._store_step)
        self.bridges[name] = ingest
        ingest.start()
        return json_reply({"shard": self.shard, "path": spec.path})

    def _store_step(self, ingest: Ingest, arrays: dict[str, np.ndarray]) -> None:
        """On the loop thread: put one ingested step's tensors into the store."""
        for key, array in arrays.items():
            try:
                desc, contiguous = describe(array)
                buf = self.store.alloc(desc.nbytes)
                if desc.nbytes:
                    buf[...] = as_bytes_view(contiguous)
                self.store.put_tensor(key, StoredTensor(desc, buf))
                ingest.tensors_put += 1
            except (MpistageError, TypeError) as exc:  # e.g. uint64 or complex, or the store is full
                ingest.problem(f"step {ingest.last_step}: {key!r} not stored: {exc}")

    # ------------------------------------------------------------ stop
    def stop(self, req: Request) -> None:
        name = self._name(req, (1, 2))
        wait = _spec(req.fields[1], {"wait_s"}).get("wait_s", 0.0) if len(req.fields) == 2 else 0.0
        if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait <= MAX_STOP_WAIT_S:
            raise BadArgumentError(f"bridge stop field 'wait_s' must be a number of seconds in [0, "
                                   f"{MAX_STOP_WAIT_S}], not {wait!r}")
        bridge = self.bridges.pop(name, None)
        if bridge is None:
            raise BadArgumentError(f"no bridge {name!r} on shard {self.shard}")
        bridge.stop(lambda: self.loop.defer(req, json_reply({"shard": self.shard, **bridge.report()})), float(wait))

    def close(self) -> None:
        """At shutdown: stop every bridge and wait (bounded) for their threads."""
        bridges, self.bridges = list(self.bridges.values()), {}
        for bridge in bridges:
            bridge.stop(lambda: None)
        for bridge in bridges:
            bridge.join(CLOSE_SECONDS)


def _dataset(name: str, tensors: dict[str, StoredTensor], metadata: bytes) -> Dataset:
    scalars, strings = unpack_metadata(metadata)
    return Dataset.from_parts(name, {n: t.array() for n, t in tensors.items()}, scalars, strings)

