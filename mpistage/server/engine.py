"""The inference engine of one shard: models and scripts, their devices, and running them.

* Models are TorchScript archives, loaded with ``torch.jit.load(io.BytesIO(bytes))``; scripts are
  TorchScript source compiled with ``torch.jit.CompilationUnit``. Nothing from a client is ever
  unpickled with ``torch.load``, and no client text reaches Python's ``exec``/``eval``.
* ``RUN_MODEL``/``RUN_SCRIPT`` are answered later: the handler (on the loop thread) reads the
  inputs from the store and queues a :class:`~mpistage.server.batcher.Job`; the worker thread
  batches (:mod:`mpistage.server.batcher`), runs the forward pass (torch releases the GIL), and
  hands the outputs back to the loop thread, which stores them and replies. The store is only
  touched on the loop thread.
* Inputs and outputs whose keys live on another shard travel between server ranks over the peer
  communicator, as ordinary GET_TENSOR/PUT_TENSOR requests, sent by the mover thread (the loop
  thread never blocks).

Wire layouts of the engine's operations: ``docs/engine.md``.
"""

from __future__ import annotations

import collections
import functools
import io
import itertools
import os
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import (
    BadArgumentError,
    KeyNotFoundError,
    MpistageError,
    ProtocolError,
    ServerRuntimeError,
    error_for_status,
)
from ..protocol import (
    REPLY_MAGIC,
    REQUEST_MAGIC,
    SEQ_MAX,
    SEQ_MIN,
    TAG_PAYLOAD,
    TAG_REQUEST,
    U64,
    Kind,
    Op,
    Status,
    TensorDesc,
    WireError,
    as_bytes_view,
    decode_key,
    decode_u32,
    describe,
    pack_message,
    unpack_message,
)
from ..router import shard_of
from ..store import ShardStore, StoredTensor
from .batcher import BatchPolicy, BatchQueue, Job, job_shape, split_rows
from .handlers import Handler, Reply, Request, expect_fields

DEVICES = ("CPU", "GPU")
BACKENDS = ("TORCH",)
MAX_ERROR_CHARS = 2000


# ---------------------------------------------------------------- devices

def choose_device(requested: str, local_rank: int) -> tuple[torch.device, str | None]:
    """The torch device for a model or script that asks for ``requested`` ("CPU" or "GPU") on a
    server rank that is ``local_rank`` on its node, and a warning when the request could not be
    met: "GPU" on a machine without CUDA falls back to the CPU (documented in docs/engine.md)."""
    if requested == "CPU":
        return torch.device("cpu"), None
    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        return torch.device("cuda", local_rank % torch.cuda.device_count()), None
    return torch.device("cpu"), "device GPU was requested but this server rank sees no GPU: running on CPU"


# ---------------------------------------------------------------- registry entries

@dataclass
class RunStats:
    """What one model or script has done (reported by INFO)."""

    requests: int = 0
    batches: int = 0
    rows: int = 0
    errors: int = 0
    queue_wait_s: float = 0.0
    compute_s: float = 0.0

    def report(self) -> dict[str, Any]:
        return {
            "requests": self.requests, "batches": self.batches, "rows": self.rows,
            "errors": self.errors,
            "mean_batch_size": round(self.rows / self.batches, 3) if self.batches else 0.0,
            "mean_requests_per_batch": round(self.requests / self.batches, 3) if self.batches else 0.0,
            "queue_wait_s": round(self.queue_wait_s, 6), "compute_s": round(self.compute_s, 6),
            "mean_queue_wait_ms": round(1e3 * self.queue_wait_s / self.requests, 3) if self.requests else 0.0,
            "mean_compute_ms": round(1e3 * self.compute_s / self.batches, 3) if self.batches else 0.0,
        }


@dataclass
class ModelEntry:
    """One version of a stored model. Replacing a model swaps the whole entry (atomically, on the
    loop thread); a batch holds a reference to the entry it runs on."""

    name: str
    module: Any  # torch.jit.ScriptModule
    data: bytes
    requested_device: str
    device: torch.device
    tag: str
    policy: BatchPolicy
    arity: tuple[int, int]
    version: int
    stats: RunStats = field(default_factory=RunStats)
    warning: str | None = None


@dataclass
class ScriptEntry:
    """One version of a stored script (TorchScript source and its compiled functions)."""

    name: str
    source: str
    unit: Any  # torch.jit.CompilationUnit
    requested_device: str
    device: torch.device
    version: int
    stats: RunStats = field(default_factory=RunStats)
    warning: str | None = None


def arity(fn: Any) -> tuple[int, int]:
    """(required, total) positional arguments of a TorchScript method or function."""
    args = [a for a in fn.schema.arguments if a.name != "self"]
    return sum(1 for a in args if not a.has_default_value()), len(args)


def check_arity(what: str, bounds: tuple[int, int], n_inputs: int) -> None:
    low, high = bounds
    if not low <= n_inputs <= high:
        want = str(low) if low == high else f"{low} to {high}"
        raise BadArgumentError(f"{what} takes {want} inputs, {n_inputs} given")


# ---------------------------------------------------------------- errors

def engine_error(what: str, exc: BaseException) -> MpistageError:
    """The typed error a caller gets when running ``what`` raised ``exc``."""
    if isinstance(exc, MpistageError):
        return exc
    text = str(exc)
    if (isinstance(exc, MemoryError) or isinstance(exc, torch.OutOfMemoryError)
            or "out of memory" in text.lower() or "can't allocate memory" in text):
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return ServerRuntimeError(f"{what} ran out of memory: {_last_line(text)}")
    line = _last_line(text)
    if not re.match(r"^[\w.]*(Error|Exception)\b", line):
        line = f"{type(exc).__name__}: {line}"
    return ServerRuntimeError(f"{what} failed: {line}")


def _last_line(text: str) -> str:
    """TorchScript errors carry an interpreter traceback; the last line is the actual error."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    line = lines[-1] if lines else "(no message)"
    return line.removeprefix("builtins.")[:MAX_ERROR_CHARS]


def reply_for(exc: BaseException) -> Reply:
    if isinstance(exc, (MpistageError, WireError)):
        return Reply.error(exc)
    return Reply(Status.INTERNAL_ERROR, [f"internal error: {type(exc).__name__}: {exc}".encode()])


# ---------------------------------------------------------------- tensors

def to_torch(tensor: StoredTensor) -> torch.Tensor:
    """A C-contiguous torch copy of a stored tensor (a copy: a model may write to its inputs,
    and the store's bytes must not change)."""
    return torch.from_numpy(np.array(tensor.array(), order="C", copy=True))


def to_stored(t: Any, what: str) -> StoredTensor:
    """A model's output as a storable tensor (on the CPU, C order)."""
    if not isinstance(t, torch.Tensor):
        raise ServerRuntimeError(f"{what} returned a {type(t).__name__}, not a tensor")
    arr = t.detach().to("cpu").contiguous().numpy()
    try:
        desc, arr = describe(arr)
    except TypeError as exc:
        raise ServerRuntimeError(f"{what} returned a tensor of dtype {t.dtype}: {exc}") from None
    return StoredTensor(desc, as_bytes_view(arr).copy() if arr.size else np.empty(0, np.uint8))


def as_tensor_list(out: Any) -> list[Any]:
    if isinstance(out, (tuple, list)):
        return list(out)
    return [out]


# ---------------------------------------------------------------- server-to-server requests

class PeerClient:
    """Requests from this server rank to another one over the peer communicator: the same
    messages a client sends (docs/protocol.md), replies on the request's seq tag. Used only from
    the engine's mover thread; one request in flight at a time."""

    def __init__(self, comm: Any, timeout: float, stopping: Callable[[], bool]) -> None:
        from ..mpienv import mpi

        self.MPI = mpi()
        self.comm = comm
        self.timeout = timeout
        self.stopping = stopping
        self.lock = threading.Lock()
        self._seqs = itertools.cycle(range(SEQ_MIN, SEQ_MAX + 1))

    def request(self, shard: int, op: Op, fields: list[bytes],
                payload: Sequence[np.ndarray] = ()) -> tuple[list[memoryview], list[np.ndarray]]:
        """Send a request to ``shard`` and wait for its reply: (fields, payload parts). Raises the
        typed error of a non-OK reply, or ServerRuntimeError when the shard does not answer."""
        with self.lock:
            seq = next(self._seqs)
            nbytes = sum(int(p.nbytes) for p in payload)
            head = pack_message(REQUEST_MAGIC, op, seq, fields, nbytes)
            self.comm.Send(np.frombuffer(head, np.uint8), shard, TAG_REQUEST)
            for part in payload:
                if part.nbytes:
                    self.comm.Send(part, shard, TAG_PAYLOAD)
            header, rfields = unpack_message(self._receive(shard, seq), REPLY_MAGIC)
            if header.code != Status.OK:
                text = bytes(rfields[0]).decode(errors="replace") if rfields else "no message"
                raise error_for_status(header.code, f"shard {shard}: {text}")
            parts, got = [], 0
            while got < header.payload_nbytes:
                parts.append(self._receive(shard, seq))
                got += parts[-1].nbytes
            return rfields, parts

    def _receive(self, shard: int, seq: int) -> np.ndarray:
        status = self.MPI.Status()
        deadline = time.monotonic() + self.timeout
        sleep = 0.0
        while True:
            msg = self.comm.Improbe(shard, seq, status)
            if msg is not None:
                buf = np.empty(status.Get_count(self.MPI.BYTE), np.uint8)
                msg.Recv(buf)
                return buf
            if self.stopping() or time.monotonic() > deadline:
                raise ServerRuntimeError(f"shard {shard} did not answer a transfer within "
                                         f"{self.timeout} s")
            sleep = min(1e-3, max(2 * sleep, 2e-5))
            time.sleep(sleep)

    def get_tensor(self, shard: int, key: str) -> StoredTensor:
        fields, parts = self.request(shard, Op.GET_TENSOR, [key.encode()])
        desc = TensorDesc.unpack(fields[0])
        data = parts[0] if parts else np.empty(0, np.uint8)
        if data.nbytes != desc.nbytes:
            raise ProtocolError(f"shard {shard} sent {data.nbytes} bytes for {key!r}, expected {desc.nbytes}")
        return StoredTensor(desc, data)

    def put_tensor(self, shard: int, key: str, tensor: StoredTensor) -> None:
        self.request(shard, Op.PUT_TENSOR, [key.encode(), tensor.desc.pack()],
                     [tensor.data] if tensor.nbytes else [])


# ---------------------------------------------------------------- the engine

@dataclass
class RunCall:
    """A decoded RUN_MODEL / RUN_SCRIPT request."""

    name: str
    function: str | None
    inputs: list[str]
    outputs: list[str]


class InferenceEngine:
    """Models, scripts and the threads that run them, for one shard.

    ``loop`` is the shard's :class:`~mpistage.server.loop.ProgressLoop` (for ``call_soon`` and
    ``defer``), ``peer`` a communicator over all server ranks (rank = shard), ``local_rank`` this
    rank's index among the server ranks on its node (picks ``cuda:k``).
    """

    def __init__(self, store: ShardStore, loop: Any, peer: Any, shard: int, nshards: int,
                 local_rank: int = 0, transfer_timeout: float = 60.0) -> None:
        self.store = store
        self.loop = loop
        self.shard, self.nshards = shard, nshards
        self.local_rank = local_rank
        self.models: dict[str, ModelEntry] = {}
        self.scripts: dict[str, ScriptEntry] = {}
        self.queues: dict[str, BatchQueue] = {}
        self.script_jobs: collections.deque[tuple[Job, str, str]] = collections.deque()
        self._versions = itertools.count(1)
        self._cond = threading.Condition()
        self._stopping = False
        self._loader = ThreadPoolExecutor(1, thread_name_prefix="mpistage-load")
        self._mover = ThreadPoolExecutor(1, thread_name_prefix="mpistage-move")
        self.peer = PeerClient(peer, transfer_timeout, lambda: self._stopping) if peer is not None else None
        self._worker = threading.Thread(target=self._work, name="mpistage-engine", daemon=True)
        self._worker.start()
        self._warned: set[str] = set()

    # ------------------------------------------------------------ handler table
    def table(self, store_handlers: dict[int, Handler]) -> dict[int, Handler]:
        """The engine's handlers; DELETE and EXISTS of kinds M and S come here, other kinds go
        on to ``store_handlers``."""
        delete, exists = store_handlers[Op.DELETE], store_handlers[Op.EXISTS]

        def routed(engine_fn: Callable[[Kind, str], Reply], store_fn: Handler) -> Handler:
            def handler(req: Request) -> Reply | None:
                kind_f, key_f = expect_fields(req, 2)
                if bytes(kind_f) in (b"M", b"S"):
                    return engine_fn(Kind(kind_f[0]), decode_key(key_f))
                return store_fn(req)
            return handler

        return {
            Op.SET_MODEL: self.set_model, Op.GET_MODEL: self.get_model, Op.RUN_MODEL: self.run_model,
            Op.SET_SCRIPT: self.set_script, Op.GET_SCRIPT: self.get_script,
            Op.RUN_SCRIPT: self.run_script,
            Op.DELETE: routed(self.delete, delete), Op.EXISTS: routed(self.exists, exists),
        }

    # ------------------------------------------------------------ models and scripts
    def set_model(self, req: Request) -> None:
        name_f, backend_f, device_f, tag_f, bs_f, mbs_f, mbt_f = expect_fields(req, 7)
        name = decode_key(name_f)
        backend, device, tag = _text(backend_f, "backend"), _text(device_f, "device"), _text(tag_f, "tag")
        batch_size, min_batch, timeout = (_u64(f, what) for f, what in (
            (bs_f, "batch_size"), (mbs_f, "min_batch_size"), (mbt_f, "min_batch_timeout")))
        if backend not in BACKENDS:
            raise BadArgumentError(f"backend {backend!r} is not supported (only TORCH)")
        _check_device(device)
        if min_batch and not batch_size:
            raise BadArgumentError("min_batch_size needs a batch_size")
        if timeout and not min_batch:
            raise BadArgumentError("min_batch_timeout needs a min_batch_size")
        if len(req.payload) != 1:
            raise BadArgumentError("SET_MODEL takes one payload part: the TorchScript file's bytes")
        data = req.payload[0].tobytes()
        policy = BatchPolicy(batch_size, min_batch, timeout)

        def load() -> ModelEntry:
            dev, warning = choose_device(device, self.local_rank)
            try:
                module = torch.jit.load(io.BytesIO(data), map_location=dev)
            except Exception as exc:
                raise BadArgumentError(f"model {name!r} is not a TorchScript archive that loads: "
                                       f"{_last_line(str(exc))}") from None
            module.eval()
            try:
                bounds = arity(module.forward)
            except Exception as exc:
                raise BadArgumentError(f"model {name!r} has no usable forward method: {exc}") from None
            return ModelEntry(name, module, data, device, dev, tag, policy, bounds,
                              next(self._versions), warning=warning)

        self._load(req, load, self._install_model)
        return None

    def set_script(self, req: Request) -> None:
        name_f, device_f = expect_fields(req, 2)
        name, device = decode_key(name_f), _text(device_f, "device")
        _check_device(device)
        if len(req.payload) > 1:
            raise BadArgumentError("SET_SCRIPT takes one payload part: the TorchScript source")
        try:
            source = req.payload[0].tobytes().decode() if req.payload else ""
        except UnicodeDecodeError:
            raise BadArgumentError(f"script {name!r} is not UTF-8 text") from None

        def compile_script() -> ScriptEntry:
            dev, warning = choose_device(device, self.local_rank)
            try:
                unit = torch.jit.CompilationUnit(source)
            except Exception as exc:
                raise BadArgumentError(f"script {name!r} does not compile as TorchScript: "
                                       f"{_last_line(str(exc))}") from None
            return ScriptEntry(name, source, unit, device, dev, next(self._versions), warning=warning)

        self._load(req, compile_script, self._install_script)
        return None

    def _load(self, req: Request, build: Callable[[], Any], install: Callable[[Any], None]) -> None:
        """Build an entry on the loader thread (loading may take a while), then install it and
        reply on the loop thread. One loader thread: two SETs of one name install in order."""
        def work() -> None:
            try:
                entry = build()
            except BaseException as exc:
                self.loop.defer(req, reply_for(exc))
                return
            if entry.warning and entry.name not in self._warned:
                self._warned.add(entry.name)
                print(f"mpistage-server shard {self.shard}: {entry.name}: {entry.warning}",
                      file=sys.stderr, flush=True)

            def finish() -> None:
                install(entry)
                self.loop.reply(req, Reply())
            self.loop.call_soon(finish)

        self._loader.submit(work)

    def _install_model(self, entry: ModelEntry) -> None:
        with self._cond:
            old = self.models.get(entry.name)
            if old is not None:  # statistics are per name, across versions
                entry.stats = old.stats
            self.models[entry.name] = entry
            self.queues.setdefault(entry.name, BatchQueue())
            self._cond.notify()

    def _install_script(self, entry: ScriptEntry) -> None:
        with self._cond:
            old = self.scripts.get(entry.name)
            if old is not None:
                entry.stats = old.stats
            self.scripts[entry.name] = entry

    def get_model(self, req: Request) -> Reply:
        (name_f,) = expect_fields(req, 1)
        entry = self._model(decode_key(name_f))
        return Reply(fields=[U64.pack(len(entry.data))],
                     payload=[np.frombuffer(entry.data, np.uint8)] if entry.data else [])

    def get_script(self, req: Request) -> Reply:
        (name_f,) = expect_fields(req, 1)
        return Reply(fields=[self._script(decode_key(name_f)).source.encode()])

    def delete(self, kind: Kind, name: str) -> Reply:
        with self._cond:
            if kind == Kind.MODEL:
                self._model(name)
                del self.models[name]
                orphans = self.queues.pop(name, BatchQueue()).drain()
            else:
                self._script(name)
                del self.scripts[name]
                orphans = []
        for job in orphans:
            job.finish(None, KeyNotFoundError(f"model {name!r} was deleted before it ran"))
        return Reply()

    def exists(self, kind: Kind, name: str) -> Reply:
        table = self.models if kind == Kind.MODEL else self.scripts
        return Reply(fields=[bytes([name in table])])

    def _model(self, name: str) -> ModelEntry:
        entry = self.models.get(name)
        if entry is None:
            raise KeyNotFoundError(f"model {name!r} does not exist")
        return entry

    def _script(self, name: str) -> ScriptEntry:
        entry = self.scripts.get(name)
        if entry is None:
            raise KeyNotFoundError(f"script {name!r} does not exist")
        return entry

    # ------------------------------------------------------------ running
    def run_model(self, req: Request) -> None:
        call = _decode_run(req.fields, with_function=False)
        entry = self._model(call.name)
        check_arity(f"model {call.name!r}", entry.arity, len(call.inputs))

        def enqueue(inputs: list[torch.Tensor]) -> None:
            rows, signature = job_shape(inputs)
            job = Job(inputs, len(call.outputs), self._finisher(req, call), rows, signature)
            with self._cond:
                queue = self.queues.get(call.name)
                if queue is None:  # deleted while its inputs travelled
                    job.finish(None, KeyNotFoundError(f"model {call.name!r} does not exist"))
                    return
                queue.push(job)
                self._cond.notify()

        self._gather(req, call, enqueue)
        return None

    def run_script(self, req: Request) -> None:
        call = _decode_run(req.fields, with_function=True)
        entry = self._script(call.name)
        fn = entry.unit.find_function(call.function)
        if fn is None:
            raise KeyNotFoundError(f"script {call.name!r} has no function {call.function!r}")
        check_arity(f"function {call.function!r} of script {call.name!r}", arity(fn), len(call.inputs))

        def enqueue(inputs: list[torch.Tensor]) -> None:
            job = Job(inputs, len(call.outputs), self._finisher(req, call))
            with self._cond:
                self.script_jobs.append((job, call.name, call.function))
                self._cond.notify()

        self._gather(req, call, enqueue)
        return None

    def _gather(self, req: Request, call: RunCall, enqueue: Callable[[list[torch.Tensor]], None]) -> None:
        """Read the inputs (loop thread); fetch those on other shards on the mover thread."""
        local: dict[int, StoredTensor] = {}
        remote: list[tuple[int, str, int]] = []
        for i, key in enumerate(call.inputs):
            owner = shard_of(key, self.nshards)
            if owner == self.shard:
                local[i] = self.store.get(Kind.TENSOR, key)
            else:
                remote.append((i, key, owner))
        if not remote:
            enqueue([to_torch(local[i]) for i in range(len(call.inputs))])
            return

        def fetch() -> None:
            try:
                for i, key, owner in remote:
                    local[i] = self._peer().get_tensor(owner, key)
                enqueue([to_torch(local[i]) for i in range(len(call.inputs))])
            except BaseException as exc:
                self.loop.defer(req, reply_for(exc))

        self._mover.submit(fetch)

    def _peer(self) -> PeerClient:
        if self.peer is None:
            raise ServerRuntimeError("this shard has no link to the other shards")
        return self.peer

    def _finisher(self, req: Request, call: RunCall) -> Callable[[list[Any] | None, BaseException | None], None]:
        """What happens to a job's result (called on the worker thread): outputs are converted,
        stored (on the loop thread, or sent to the shards that own their keys), and the caller
        gets one reply."""
        what = f"model {call.name!r}" if call.function is None else \
            f"function {call.function!r} of script {call.name!r}"

        def finish(outputs: list[Any] | None, error: BaseException | None) -> None:
            if error is not None:
                self.loop.defer(req, reply_for(error))
                return
            try:
                if len(outputs) != len(call.outputs):
                    raise BadArgumentError(f"{what} returned {len(outputs)} tensors, "
                                           f"{len(call.outputs)} output keys were given")
                stored = [to_stored(t, what) for t in outputs]
            except BaseException as exc:
                self.loop.defer(req, reply_for(exc))
                return
            here = [(k, t) for k, t in zip(call.outputs, stored, strict=True)
                    if shard_of(k, self.nshards) == self.shard]
            away = [(k, t) for k, t in zip(call.outputs, stored, strict=True)
                    if shard_of(k, self.nshards) != self.shard]

            def store_and_reply() -> None:
                try:
                    for key, tensor in here:
                        self.store.put_tensor(key, tensor)
                except BaseException as exc:
                    self.loop.reply(req, reply_for(exc))
                    return
                self.loop.reply(req, Reply())

            if not away:
                self.loop.call_soon(store_and_reply)
                return

            def send_away() -> None:
                try:
                    for key, tensor in away:
                        self._peer().put_tensor(shard_of(key, self.nshards), key, tensor)
                except BaseException as exc:
                    self.loop.defer(req, reply_for(exc))
                    return
                self.loop.call_soon(store_and_reply)

            self._mover.submit(send_away)

        return finish

    # ------------------------------------------------------------ the worker thread
    def _work(self) -> None:
        while True:
            try:
                with self._cond:
                    while True:
                        if self._stopping:
                            return
                        task, wait = self._next_task(time.monotonic())
                        if task is not None:
                            break
                        self._cond.wait(wait)
                task()
            except Exception as exc:  # a bug: fail what waits, report it, keep serving
                traceback.print_exc()
                self._fail_waiting(exc)

    def _fail_waiting(self, exc: Exception) -> None:
        with self._cond:
            jobs = [j for q in self.queues.values() for j in q.drain()]
            jobs += [j for j, _, _ in self.script_jobs]
            self.script_jobs.clear()
        for job in jobs:
            job.finish(None, exc)

    def _next_task(self, now: float) -> tuple[Callable[[], None] | None, float | None]:
        """The oldest runnable work (a model batch or a script call), under the lock."""
        candidates: list[tuple[float, str]] = [(q.oldest(), name) for name, q in self.queues.items() if q]
        if self.script_jobs:
            candidates.append((self.script_jobs[0][0].enqueued, ""))
        wait: float | None = None
        for _, name in sorted(candidates):
            if name == "":
                job, script, function = self.script_jobs.popleft()
                entry = self.scripts.get(script)
                return functools.partial(self._run_script, entry, script, function, job), None
            entry = self.models[name]
            jobs, later = self.queues[name].take(entry.policy, now)
            if jobs:
                return functools.partial(self._run_model, entry, jobs), None
            if later is not None:
                wait = later if wait is None else min(wait, later)
        return None, wait

    def _run_model(self, entry: ModelEntry, jobs: list[Job]) -> None:
        start = time.monotonic()
        what = f"model {entry.name!r}"
        results: list[tuple[list[Any] | None, BaseException | None]]
        batches = 1
        if len(jobs) == 1:
            results = [self._call(what, entry.module, entry.device, jobs[0].inputs)]
        else:
            try:
                n_in = len(jobs[0].inputs)
                batched = [torch.cat([j.inputs[i] for j in jobs]) for i in range(n_in)]
                outs, error = self._call(what, entry.module, entry.device, batched)
                if error is not None:
                    raise error
                pieces = [split_rows(o, [j.rows for j in jobs]) for o in outs]
                results = [([p[k] for p in pieces], None) for k in range(len(jobs))]
            except Exception:
                # One bad request must fail only its own caller: run each request alone.
                results = [self._call(what, entry.module, entry.device, j.inputs) for j in jobs]
                batches = 1 + len(jobs)
        end = time.monotonic()
        stats = entry.stats
        stats.requests += len(jobs)
        stats.batches += batches
        stats.rows += sum(j.rows or 0 for j in jobs)
        stats.errors += sum(1 for _, e in results if e is not None)
        stats.queue_wait_s += sum(start - j.enqueued for j in jobs)
        stats.compute_s += end - start
        for job, (outs, error) in zip(jobs, results, strict=True):
            job.finish(outs, error)

    def _run_script(self, entry: ScriptEntry | None, name: str, function: str, job: Job) -> None:
        if entry is None:
            job.finish(None, KeyNotFoundError(f"script {name!r} was deleted before it ran"))
            return
        fn = entry.unit.find_function(function)
        if fn is None:
            job.finish(None, KeyNotFoundError(f"script {name!r} has no function {function!r}"))
            return
        start = time.monotonic()
        outs, error = self._call(f"function {function!r} of script {name!r}", fn, entry.device, job.inputs)
        stats = entry.stats
        stats.requests += 1
        stats.batches += 1
        stats.rows += job.rows or 0
        stats.errors += error is not None
        stats.queue_wait_s += start - job.enqueued
        stats.compute_s += time.monotonic() - start
        job.finish(outs, error)

    @staticmethod
    def _call(what: str, fn: Any, device: torch.device,
              inputs: list[torch.Tensor]) -> tuple[list[Any] | None, BaseException | None]:
        """Run ``fn`` on ``inputs`` (moved to ``device``): (outputs on the CPU, None) or
        (None, the typed error)."""
        try:
            with torch.inference_mode():
                out = fn(*[t.to(device) for t in inputs])
            outs = as_tensor_list(out)
            if device.type != "cpu":
                outs = [o.to("cpu") if isinstance(o, torch.Tensor) else o for o in outs]
            return outs, None
        except BaseException as exc:  # anything raised inside forward fails only this caller
            return None, engine_error(what, exc)

    # ------------------------------------------------------------ statistics and lifetime
    def stats(self) -> dict[str, Any]:
        """Per model and per script: device, version, batching settings and run statistics."""
        with self._cond:
            models = {name: {
                "device": str(e.device), "requested_device": e.requested_device, "tag": e.tag,
                "version": e.version, "batch_size": e.policy.batch_size,
                "min_batch_size": e.policy.min_batch_size,
                "min_batch_timeout": e.policy.min_batch_timeout_ms,
                "queued": len(self.queues.get(name, ())), **e.stats.report(),
            } for name, e in self.models.items()}
            scripts = {name: {"device": str(e.device), "requested_device": e.requested_device,
                              "version": e.version, **e.stats.report()}
                       for name, e in self.scripts.items()}
        return {"models": models, "scripts": scripts, "torch_threads": torch.get_num_threads(),
                "cuda_devices": torch.cuda.device_count() if torch.cuda.is_available() else 0,
                "pid": os.getpid()}

    def close(self) -> None:
        """Stop the threads; jobs still waiting are dropped (the loop has ended)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._worker.join(timeout=30)
        self._loader.shutdown(wait=False, cancel_futures=True)
        self._mover.shutdown(wait=False, cancel_futures=True)


# ---------------------------------------------------------------- field decoding

def _text(f: memoryview, what: str) -> str:
    try:
        return bytes(f).decode()
    except UnicodeDecodeError:
        raise BadArgumentError(f"{what} is not UTF-8 text") from None


def _u64(f: memoryview, what: str) -> int:
    if len(f) != 8:
        raise ProtocolError(f"{what} must be an 8-byte unsigned integer")
    return U64.unpack(f)[0]


def _check_device(device: str) -> None:
    if device not in DEVICES:
        raise BadArgumentError(f"device {device!r} is not CPU or GPU")


def _decode_run(fields: list[memoryview], with_function: bool) -> RunCall:
    """[name, (function,) u32 n_inputs, inputs..., outputs...]"""
    head = 3 if with_function else 2
    if len(fields) < head:
        raise ProtocolError(f"{'RUN_SCRIPT' if with_function else 'RUN_MODEL'} takes a name, "
                            f"{'a function name, ' if with_function else ''}an input count and keys")
    name = decode_key(fields[0])
    function = _text(fields[1], "function name") if with_function else None
    n_in = decode_u32(fields[head - 1], "the input count")
    keys = [decode_key(f) for f in fields[head:]]
    if n_in > len(keys):
        raise ProtocolError(f"input count {n_in} is more than the {len(keys)} keys given")
    if n_in == 0:
        raise BadArgumentError("a run needs at least one input key")
    return RunCall(name, function, keys[:n_in], keys[n_in:])
