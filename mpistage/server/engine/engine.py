"""The inference engine of one shard: the handlers of operations 50-57, and scheduling.

* ``SET_MODEL``/``SET_SCRIPT`` are decoded on the loop thread (:mod:`.requests`); the model is
  loaded by its runtime (:mod:`.runtime`; torch is imported then, not before) on the loader
  thread, and installed in the :class:`~.registry.Registry` and answered on the loop thread.
* ``RUN_MODEL``/``RUN_SCRIPT`` are answered later: the handler (loop thread) reads the inputs from
  the store and queues a :class:`~.batcher.Job`; the worker thread batches (:mod:`.batcher`, with
  ``np.concatenate``), calls the runnable (the framework releases the GIL), and hands the outputs
  back to the loop thread, which stores them and replies. The store is only touched on the loop
  thread; inputs and outputs stay numpy arrays outside the runtime.
* Inputs and outputs whose keys live on another shard travel between server ranks as ordinary
  GET_TENSOR/PUT_TENSOR requests (:class:`~mpistage.server.peer.PeerClient`), sent by the mover
  thread (the loop thread never blocks).
* Every run has a deadline (the request's timeout, else ``--model-timeout``). The watchdog thread
  answers a timeout error to each job past its deadline, queued or running; when every job of the
  running batch has been answered so, the worker is stuck (an endless script, a model that
  hangs): it is abandoned (a Python thread cannot be killed; it leaves when its call returns, its
  results dropped) and a new worker serves the other models and later calls.

Wire layouts: ``docs/engine.md``.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np

from ...errors import BadArgumentError, KeyNotFoundError, MpistageError, ServerRuntimeError
from ...protocol import U64, Kind, Op, Status, as_bytes_view, decode_key, describe
from ...router import shard_of
from ..handlers import Handler, Reply, Request, expect_fields
from ..store import ShardStore, StoredTensor
from .batcher import BatchPolicy, Job, job_shape, split_rows
from .registry import ModelEntry, Registry, ScriptEntry, ScriptJob
from .requests import RunCall, decode_name, decode_run, decode_set_model, decode_set_script
from .runtime import DEFAULT_OPTIONS, SCRIPT_BACKEND, RuntimeOptions, Runtimes


class Loop(Protocol):
    """What the engine needs of the shard's progress loop."""

    def call_soon(self, fn: Callable[[], None]) -> None: ...
    def defer(self, req: Request, rep: Reply) -> None: ...
    def reply(self, req: Request, rep: Reply) -> None: ...


class Peer(Protocol):
    """Tensor transfers to and from other shards (:class:`~mpistage.server.peer.PeerClient`)."""

    def get_tensor(self, shard: int, key: str) -> StoredTensor: ...
    def put_tensor(self, shard: int, key: str, tensor: StoredTensor) -> None: ...


def reply_for(exc: Exception) -> Reply:
    """The error reply for ``exc`` (a bug becomes INTERNAL_ERROR)."""
    if isinstance(exc, MpistageError):
        return Reply.error(exc)
    return Reply(Status.INTERNAL_ERROR, [f"internal error: {type(exc).__name__}: {exc}".encode()])


def check_arity(what: str, bounds: tuple[int, int], n_inputs: int) -> None:
    low, high = bounds
    if not low <= n_inputs <= high:
        want = str(low) if low == high else f"{low} to {high}"
        raise BadArgumentError(f"{what} takes {want} inputs, {n_inputs} given")


def to_stored(arr: np.ndarray, what: str, store: ShardStore) -> StoredTensor:
    """A runnable's output as a storable tensor, in a buffer of the store's allocator."""
    try:
        desc, arr = describe(arr)
    except TypeError as exc:
        raise ServerRuntimeError(f"{what} returned a tensor of dtype {arr.dtype}: {exc}") from None
    buf = store.alloc(desc.nbytes)
    if desc.nbytes:
        buf[...] = as_bytes_view(arr)
    return StoredTensor(desc, buf)


def owned_input(tensor: StoredTensor) -> np.ndarray:
    """A C-contiguous copy of a stored tensor that a runnable may change (the store's bytes must
    not change); made on the worker thread."""
    return np.array(tensor.array(), order="C", copy=True)


class InferenceEngine:
    """Models, scripts and the threads that run them, for one shard.

    ``loop`` is the shard's progress loop, ``peer`` reaches the other shards (None with one
    shard), ``local_rank`` is this rank's index among the server ranks on its node (picks a GPU).
    """

    def __init__(self, store: ShardStore, loop: Loop, peer: Peer | None, shard: int, nshards: int,
                 local_rank: int = 0, options: RuntimeOptions = DEFAULT_OPTIONS) -> None:
        self.store = store
        self.loop = loop
        self.peer = peer
        self.shard, self.nshards = shard, nshards
        self.local_rank = local_rank
        self.runtimes = Runtimes(options)
        self.registry = Registry()
        self.script_jobs: deque[ScriptJob] = deque()
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)  # the worker waits on it
        self._watch_cond = threading.Condition(self._lock)  # the watchdog waits on it
        self._stopping = False
        self._warned: set[str] = set()
        self._loader = ThreadPoolExecutor(1, thread_name_prefix="mpistage-load")
        self._mover = ThreadPoolExecutor(1, thread_name_prefix="mpistage-move")
        self._generation = 0  # the current worker's; an abandoned worker's is older
        self._running: dict[int, list[Job]] = {}  # worker generation -> the jobs it runs now
        self.timeouts = 0
        self.abandoned_workers = 0
        self._worker = self._start_worker()
        self._watchdog = threading.Thread(target=self._watch, name="mpistage-watchdog", daemon=True)
        self._watchdog.start()

    @property
    def options(self) -> RuntimeOptions:
        return self.runtimes.options

    @property
    def stopping(self) -> bool:
        return self._stopping

    # ------------------------------------------------------------ handler table
    def table(self, store_handlers: dict[int, Handler]) -> dict[int, Handler]:
        """The engine's handlers. DELETE and EXISTS of kinds M and S are the engine's; of other
        kinds they go on to ``store_handlers``' DELETE and EXISTS."""
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
        msg = decode_set_model(req)
        self.options.check_backend(msg.backend)

        def build() -> ModelEntry:
            runnable, warning = self.runtimes.get(msg.backend).load_model(
                msg.name, msg.data, msg.device, self.local_rank)
            policy = msg.policy if getattr(runnable, "batchable", True) else BatchPolicy()
            return ModelEntry(msg.name, runnable, msg.data, msg.backend, msg.device, msg.tag,
                              policy, warning=warning, requested_policy=msg.policy)

        self._load(req, build, self.registry.install_model)

    def set_script(self, req: Request) -> None:
        self.options.check_scripts()
        msg = decode_set_script(req)

        def build() -> ScriptEntry:
            unit, warning = self.runtimes.get(SCRIPT_BACKEND).compile_script(
                msg.name, msg.source, msg.device, self.local_rank)
            return ScriptEntry(msg.name, msg.source, unit, msg.device, warning=warning)

        self._load(req, build, self.registry.install_script)

    def _load(self, req: Request, build: Callable[[], Any], install: Callable[[Any], None]) -> None:
        """Build an entry on the loader thread (loading may take a while), then install it and
        reply on the loop thread. One loader thread: two SETs of one name install in order."""
        def work() -> None:
            try:
                entry = build()
            except Exception as exc:
                self.loop.defer(req, reply_for(exc))
                return
            if entry.warning and entry.name not in self._warned:
                self._warned.add(entry.name)
                print(f"mpistage-server shard {self.shard}: {entry.name}: {entry.warning}",
                      file=sys.stderr, flush=True)

            def finish() -> None:
                with self._lock:
                    install(entry)
                    self._cond.notify_all()
                self.loop.reply(req, Reply())
            self.loop.call_soon(finish)

        self._loader.submit(work)

    def get_model(self, req: Request) -> Reply:
        entry = self.registry.model(decode_name(req))
        return Reply(fields=[U64.pack(len(entry.data))],
                     payload=[np.frombuffer(entry.data, np.uint8)] if entry.data else [])

    def get_script(self, req: Request) -> Reply:
        return Reply(fields=[self.registry.script(decode_name(req)).source.encode()])

    def delete(self, kind: Kind, name: str) -> Reply:
        with self._lock:
            if kind == Kind.MODEL:
                orphans = self.registry.delete_model(name)
            else:
                self.registry.delete_script(name)
                orphans = []
        for job in orphans:
            job.complete(None, KeyNotFoundError(f"model {name!r} was deleted before it ran"))
        return Reply()

    def exists(self, kind: Kind, name: str) -> Reply:
        table = self.registry.models if kind == Kind.MODEL else self.registry.scripts
        return Reply(fields=[bytes([name in table])])

    # ------------------------------------------------------------ running
    def _timeout(self, call: RunCall) -> tuple[float, float]:
        """(timeout in seconds, deadline) of a run arriving now."""
        timeout = call.timeout_ms / 1000 if call.timeout_ms else self.options.model_timeout_s
        return timeout, time.monotonic() + timeout

    def _wake(self) -> None:
        """New work: the worker may run it, the watchdog has a new deadline. Under the lock."""
        self._cond.notify_all()  # all: a worker abandoned by mistake may be among the waiters
        self._watch_cond.notify()

    def run_model(self, req: Request) -> None:
        call = decode_run(req.fields, with_function=False)
        entry = self.registry.model(call.name)
        check_arity(call.what, entry.runnable.arity, len(call.inputs))
        timeout, deadline = self._timeout(call)

        def enqueue(inputs: list[StoredTensor]) -> None:
            rows, signature = job_shape([t.desc for t in inputs])
            job = Job(inputs, self._finisher(req, call), rows, signature, deadline=deadline,
                      timeout_s=timeout, what=call.what)
            with self._lock:
                queue = self.registry.queues.get(call.name)
                if queue is None:  # deleted while its inputs travelled
                    missing = True
                else:
                    missing = False
                    queue.push(job)
                    self._wake()
            if missing:
                job.complete(None, KeyNotFoundError(f"model {call.name!r} does not exist"))

        self._gather(req, call, enqueue)

    def run_script(self, req: Request) -> None:
        self.options.check_scripts()
        call = decode_run(req.fields, with_function=True)
        entry = self.registry.script(call.name)
        fn = entry.unit.function(call.function)
        if fn is None:
            raise KeyNotFoundError(f"script {call.name!r} has no function {call.function!r}")
        check_arity(call.what, fn.arity, len(call.inputs))
        timeout, deadline = self._timeout(call)

        def enqueue(inputs: list[StoredTensor]) -> None:
            job = Job(inputs, self._finisher(req, call), deadline=deadline, timeout_s=timeout, what=call.what)
            with self._lock:
                self.script_jobs.append(ScriptJob(job, call.name, call.function))
                self._wake()

        self._gather(req, call, enqueue)

    def _gather(self, req: Request, call: RunCall, enqueue: Callable[[list[StoredTensor]], None]) -> None:
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
            enqueue([local[i] for i in range(len(call.inputs))])
            return

        def fetch() -> None:
            try:
                for i, key, owner in remote:
                    local[i] = self._peer().get_tensor(owner, key)
                enqueue([local[i] for i in range(len(call.inputs))])
            except Exception as exc:
                self.loop.defer(req, reply_for(exc))

        self._mover.submit(fetch)

    def _peer(self) -> Peer:
        if self.peer is None:
            raise ServerRuntimeError("this shard has no link to the other shards")
        return self.peer

    def _finisher(self, req: Request, call: RunCall) -> Callable[[list[np.ndarray] | None, Exception | None], None]:
        """What happens to a job's result (called on the worker thread): outputs are converted,
        stored (on the loop thread, or sent to the shards that own their keys), and the caller
        gets one reply."""
        def finish(outputs: list[np.ndarray] | None, error: Exception | None) -> None:
            if error is not None:
                self.loop.defer(req, reply_for(error))
                return
            try:
                if len(outputs) != len(call.outputs):
                    raise BadArgumentError(f"{call.what} returned {len(outputs)} tensors, "
                                           f"{len(call.outputs)} output keys were given")
                stored = [to_stored(a, call.what, self.store) for a in outputs]
            except Exception as exc:
                self.loop.defer(req, reply_for(exc))
                return
            pairs = list(zip(call.outputs, stored, strict=True))
            here = [(k, t) for k, t in pairs if shard_of(k, self.nshards) == self.shard]
            away = [(k, t) for k, t in pairs if shard_of(k, self.nshards) != self.shard]

            def store_and_reply() -> None:
                try:
                    for key, tensor in here:
                        self.store.put_tensor(key, tensor)
                except Exception as exc:
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
                except Exception as exc:
                    self.loop.defer(req, reply_for(exc))
                    return
                self.loop.call_soon(store_and_reply)

            self._mover.submit(send_away)

        return finish

    # ------------------------------------------------------------ the worker and the watchdog
    def _start_worker(self) -> threading.Thread:
        """A worker for the current generation. Under the lock, or before the threads start."""
        worker = threading.Thread(target=self._work, args=(self._generation,),
                                  name=f"mpistage-engine-{self._generation}", daemon=True)
        worker.start()
        return worker

    def _work(self, generation: int) -> None:
        while True:
            try:
                with self._lock:
                    while True:
                        if self._stopping or generation != self._generation:
                            return
                        task, wait = self.next_task(time.monotonic())
                        if task is not None:
                            break
                        self._cond.wait(wait)
                    jobs, run = task
                    self._running[generation] = jobs
                run()
            except Exception as exc:  # a bug: fail what waits, report it, keep serving
                traceback.print_exc()
                self._fail_waiting(exc)
            finally:
                with self._lock:
                    self._running.pop(generation, None)

    def _fail_waiting(self, exc: Exception) -> None:
        with self._lock:
            jobs = [j for q in self.registry.queues.values() for j in q.drain()]
            jobs += [s.job for s in self.script_jobs]
            self.script_jobs.clear()
        for job in jobs:
            job.complete(None, exc)

    def _watch(self) -> None:
        """Answer every job past its deadline; replace a worker whose whole task timed out."""
        while True:
            with self._lock:
                if self._stopping:
                    return
                now = time.monotonic()
                expired = self._take_expired(now)
                if not expired:
                    self._replace_stuck_worker()
                    self._watch_cond.wait(self._next_deadline(now))
                    continue
            for job in expired:
                job.timed_out = True  # before complete(): the worker may finish it first, harmlessly
                if job.complete(None, ServerRuntimeError(
                        f"{job.what} timed out after {job.timeout_s:g} s (waiting and running); "
                        f"the server goes on")):
                    self.timeouts += 1

    def _take_expired(self, now: float) -> list[Job]:
        """Jobs past their deadline: queued ones leave their queue. Under the lock."""
        expired = [j for q in self.registry.queues.values() for j in q.expire(now)]
        for sj in [sj for sj in self.script_jobs if sj.job.expired(now)]:
            self.script_jobs.remove(sj)
            expired.append(sj.job)
        expired += [j for jobs in self._running.values() for j in jobs if j.expired(now)]
        return expired

    def _replace_stuck_worker(self) -> None:
        """When every job the current worker runs has been answered (by timeouts), start a new
        worker; the old one leaves when its call returns. Under the lock."""
        jobs = self._running.get(self._generation)
        if jobs and all(j.done for j in jobs) and any(j.timed_out for j in jobs) and not self._stopping:
            print(f"mpistage-server shard {self.shard}: {jobs[0].what} is still running past its deadline: "
                  f"its worker is abandoned and a new one serves the other calls", file=sys.stderr, flush=True)
            self._generation += 1
            self.abandoned_workers += 1
            self._worker = self._start_worker()

    def _next_deadline(self, now: float) -> float | None:
        """Seconds until the earliest pending deadline (None: none). Under the lock."""
        jobs = [j for q in self.registry.queues.values() for j in q.jobs]
        jobs += [sj.job for sj in self.script_jobs]
        jobs += [j for js in self._running.values() for j in js if not j.done]
        deadlines = [j.deadline for j in jobs if j.deadline is not None]
        return max(0.0, min(deadlines) - now) if deadlines else None

    def next_task(self, now: float) -> tuple[tuple[list[Job], Callable[[], None]] | None, float | None]:
        """The oldest runnable work ((its jobs, the call that runs them): a model batch or a script
        call) and None, or (None, how long until a batch may be ready; None = until new work).
        Call under the engine's lock."""
        candidates: list[tuple[float, str]] = [(q.oldest(), name) for name, q in self.registry.queues.items() if q]
        if self.script_jobs:
            candidates.append((self.script_jobs[0].job.enqueued, ""))
        wait: float | None = None
        for _, name in sorted(candidates):
            if name == "":
                sj = self.script_jobs.popleft()
                return ([sj.job], functools.partial(self._run_script, self.registry.scripts.get(sj.script), sj)), None
            entry = self.registry.models[name]
            jobs, later = self.registry.queues[name].take(entry.policy, now)
            if jobs:
                return (jobs, functools.partial(self._run_model, entry, jobs)), None
            if later is not None:
                wait = later if wait is None else min(wait, later)
        return None, wait

    @staticmethod
    def _call(fn: Callable[[list[np.ndarray]], list[np.ndarray]],
              inputs: list[np.ndarray]) -> tuple[list[np.ndarray] | None, Exception | None]:
        try:
            return fn(inputs), None
        except Exception as exc:  # the runnable's typed error, or a bug: fails only this call
            return None, exc if isinstance(exc, MpistageError) else ServerRuntimeError(
                f"run failed: {type(exc).__name__}: {exc}")

    def _run_model(self, entry: ModelEntry, jobs: list[Job]) -> None:
        start = time.monotonic()
        run = entry.runnable
        batches = 1
        if len(jobs) == 1:
            results = [self._call(run, [owned_input(t) for t in jobs[0].inputs])]
        else:
            try:
                n_in = len(jobs[0].inputs)
                outs, error = self._call(run, [np.concatenate([j.inputs[i].array() for j in jobs])
                                               for i in range(n_in)])
                if error is not None:
                    raise error
                pieces = [split_rows(o, [j.rows for j in jobs]) for o in outs]
                results = [([p[k] for p in pieces], None) for k in range(len(jobs))]
            except Exception:
                # One bad request must fail only its own caller: run each request alone.
                results = [self._call(run, [owned_input(t) for t in j.inputs]) for j in jobs]
                batches = 1 + len(jobs)
        stats = entry.stats
        stats.requests += len(jobs)
        stats.batches += batches
        stats.rows += sum(j.rows or 0 for j in jobs)
        stats.errors += sum(1 for _, e in results if e is not None)
        stats.queue_wait_s += sum(start - j.enqueued for j in jobs)
        stats.compute_s += time.monotonic() - start
        for job, (outs, error) in zip(jobs, results, strict=True):
            job.complete(outs, error)

    def _run_script(self, entry: ScriptEntry | None, sj: ScriptJob) -> None:
        job = sj.job
        if entry is None:
            job.complete(None, KeyNotFoundError(f"script {sj.script!r} was deleted before it ran"))
            return
        fn = entry.unit.function(sj.function)
        if fn is None:
            job.complete(None, KeyNotFoundError(f"script {sj.script!r} has no function {sj.function!r}"))
            return
        start = time.monotonic()
        outs, error = self._call(fn, [owned_input(t) for t in job.inputs])
        stats = entry.stats
        stats.requests += 1
        stats.batches += 1
        stats.rows += job.rows or 0
        stats.errors += error is not None
        stats.queue_wait_s += start - job.enqueued
        stats.compute_s += time.monotonic() - start
        job.complete(outs, error)

    # ------------------------------------------------------------ statistics and lifetime
    def report(self) -> dict[str, Any]:
        """Per model and script: device, version, batching and run statistics; per runtime that
        has been loaded, its report; whether this process has imported torch."""
        with self._lock:
            registry = self.registry.report()
        options = self.options
        return {**registry, "runtimes": self.runtimes.report(), "torch_imported": "torch" in sys.modules,
                "accepted_backends": sorted(options.backends) if options.backends is not None else "all",
                "scripts_enabled": options.scripts, "default_timeout_s": options.model_timeout_s,
                "timeouts": self.timeouts, "abandoned_workers": self.abandoned_workers, "pid": os.getpid()}

    def exit_if_stuck(self, finalize: Callable[[], None]) -> None:
        """Call at the very end of a server whose engine has closed: when a worker was abandoned
        (it may still be running), finish MPI with ``finalize`` and leave the process at once
        with status 0. Python's own exit would stop the stuck thread inside torch's C++ frames,
        which aborts the process (``terminate called without an active exception``)."""
        if not self.abandoned_workers:
            return
        sys.stdout.flush()
        sys.stderr.flush()
        finalize()
        os._exit(0)

    def close(self) -> None:
        """Stop the threads; jobs still waiting are dropped (the loop has ended)."""
        with self._lock:
            self._stopping = True
            self._cond.notify_all()
            self._watch_cond.notify_all()
            worker = self._worker
        worker.join(timeout=30)
        self._watchdog.join(timeout=5)
        self._loader.shutdown(wait=False, cancel_futures=True)
        self._mover.shutdown(wait=False, cancel_futures=True)
