"""The server's parts without MPI: the store and its allocator, the handlers, the control
operations, the batching policy and the engine's scheduling (with a small loop of our own that
records replies, and a numpy model runtime registered the way a new runtime would be)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import ClassVar

import h5py
import numpy as np
import pytest

from mpistage.errors import BadArgumentError, KeyNotFoundError, ProtocolError, ServerRuntimeError
from mpistage.protocol import (
    REQUEST_MAGIC,
    U64,
    Kind,
    Op,
    Status,
    TensorDesc,
    describe,
    pack_message,
    pack_metadata,
    unpack_message,
)
from mpistage.server.control import ControlHandlers
from mpistage.server.engine import InferenceEngine, RuntimeOptions
from mpistage.server.engine import runtime as runtime_mod
from mpistage.server.engine.batcher import BatchPolicy, BatchQueue, Job, job_shape, split_rows
from mpistage.server.handlers import Reply, Request, StoreHandlers
from mpistage.server.links import WindowBudget
from mpistage.server.store import HeapAllocator, ShardStore, StoredTensor
from mpistage.server.store.snapshot import restore_snapshot

# ---------------------------------------------------------------- helpers


def request(op: Op, fields: list[bytes], payload: list[np.ndarray] = (), seq: int = 16) -> Request:
    """A request as the loop hands it to a handler (fields decoded from real wire bytes)."""
    nbytes = sum(p.nbytes for p in payload)
    header, decoded = unpack_message(pack_message(REQUEST_MAGIC, op, seq, fields, nbytes), REQUEST_MAGIC)
    return Request(None, 0, header, decoded, [np.ascontiguousarray(p).reshape(-1).view(np.uint8) for p in payload])


def stored(arr: np.ndarray) -> StoredTensor:
    desc, a = describe(arr)
    return StoredTensor(desc, np.ascontiguousarray(a).reshape(-1).view(np.uint8).copy())


class CountingAllocator(HeapAllocator):
    """Heap memory that counts what the store takes and gives back."""

    name = "counting"

    def __init__(self) -> None:
        self.allocated = 0
        self.released = 0

    def alloc(self, nbytes: int) -> np.ndarray:
        self.allocated += nbytes
        return super().alloc(nbytes)

    def release(self, buf: np.ndarray) -> None:
        self.released += buf.nbytes


class RecordingLoop:
    """The loop's thread-facing surface (call_soon, defer, reply) on the test's thread: replies
    are recorded by seq; ``pump`` runs what other threads handed over."""

    def __init__(self) -> None:
        self.soon: deque[Callable[[], None]] = deque()
        self.replies: dict[int, Reply] = {}
        self.stop_after_last_job = False
        self.lock = threading.Lock()

    def call_soon(self, fn: Callable[[], None]) -> None:
        self.soon.append(fn)

    def defer(self, req: Request, rep: Reply) -> None:
        self.call_soon(lambda: self.reply(req, rep))

    def reply(self, req: Request, rep: Reply) -> None:
        self.replies[req.header.seq] = rep

    def report(self) -> dict:
        return {"requests": 0, "links": []}

    def pump(self, until: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not until():
            while self.soon:
                self.soon.popleft()()
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting for the engine")
            time.sleep(0.001)

    def wait_reply(self, seq: int, timeout: float = 10.0) -> Reply:
        self.pump(lambda: seq in self.replies, timeout)
        return self.replies.pop(seq)


# ---------------------------------------------------------------- the store and its allocator

def test_store_takes_buffers_from_its_allocator_and_gives_them_back():
    alloc = CountingAllocator()
    s = ShardStore(allocator=alloc)
    s.put_tensor("a", stored(np.arange(10, dtype=np.float64)))
    s.copy(Kind.TENSOR, "a", "b")  # a copy owns its own buffer, from the allocator
    assert alloc.allocated == 80
    a, b = s.get(Kind.TENSOR, "a"), s.get(Kind.TENSOR, "b")
    assert a.data is not b.data and np.array_equal(a.array(), b.array())
    s.put_tensor("a", stored(np.zeros(3)))  # replacing releases the old buffer
    assert alloc.released == 80
    s.delete(Kind.TENSOR, "b")
    assert alloc.released == 160
    s.rename(Kind.TENSOR, "a", "c")
    assert alloc.released == 160 and list(s.tensors) == ["c"]


def test_snapshot_copy_is_taken_at_save_and_restore_allocates(tmp_path):
    s = ShardStore()
    s.put_tensor("t", stored(np.arange(6, dtype=np.int32).reshape(2, 3)))
    s.append_to_list("l", "d0")
    loop, engine = RecordingLoop(), type("E", (), {"report": lambda self: {}})()
    control = ControlHandlers(0, 1, s, loop, engine, tmp_path)
    assert control.save(request(Op.SAVE, [], seq=20)) is None
    s.append_to_list("l", "d1")  # changed right after SAVE, on the same thread
    s.delete(Kind.TENSOR, "t")
    rep = loop.wait_reply(20)
    assert rep.status == Status.OK, rep.fields
    alloc = CountingAllocator()
    fresh = ShardStore(allocator=alloc)
    assert restore_snapshot(fresh, tmp_path, 0, 1) == 2
    assert fresh.list_range("l", 0, -1) == ["d0"]
    assert fresh.get(Kind.TENSOR, "t").array().tolist() == [[0, 1, 2], [3, 4, 5]]
    assert alloc.allocated == 24
    with h5py.File(tmp_path / "shard-0-of-1.h5") as f:
        assert f.attrs["nshards"] == 1


def test_control_info_save_without_directory_and_shutdown():
    s = ShardStore(max_bytes=1000)
    loop = RecordingLoop()
    engine = type("E", (), {"report": lambda self: {"models": {}}})()
    control = ControlHandlers(3, 4, s, loop, engine, None)
    info = json.loads(bytes(control.info(request(Op.INFO, [])).fields[0]))
    assert info["shard"] == 3 and info["nshards"] == 4 and info["max_bytes"] == 1000
    assert info["engine"] == {"models": {}} and info["links"] == [] and info["allocator"] == "heap"
    with pytest.raises(BadArgumentError, match="--snapshot"):
        control.save(request(Op.SAVE, []))
    assert control.shutdown(request(Op.SHUTDOWN, [])).status == Status.OK and loop.stop_after_last_job


# ---------------------------------------------------------------- the store's handlers

def test_handlers_put_get_exists_delete():
    h = StoreHandlers(ShardStore())
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    desc, _ = describe(x)
    assert h.put_tensor(request(Op.PUT_TENSOR, [b"k", desc.pack()], [x])).status == Status.OK
    rep = h.get_tensor(request(Op.GET_TENSOR, [b"k"]))
    got = TensorDesc.unpack(rep.fields[0]).view(rep.payload[0])
    assert np.array_equal(got, x)
    assert h.exists(request(Op.EXISTS, [b"T", b"k"])).fields == [b"\x01"]
    h.delete(request(Op.DELETE, [b"T", b"k"]))
    assert h.exists(request(Op.EXISTS, [b"*", b"k"])).fields == [b"\x00"]
    with pytest.raises(KeyNotFoundError):
        h.get_tensor(request(Op.GET_TENSOR, [b"k"]))


def test_handlers_reject_bad_requests():
    h = StoreHandlers(ShardStore())
    desc = TensorDesc(np.dtype("float64"), (4,)).pack()
    with pytest.raises(ProtocolError, match="takes 2 fields"):
        h.put_tensor(request(Op.PUT_TENSOR, [b"k"]))
    with pytest.raises(BadArgumentError, match="does not match"):
        h.put_tensor(request(Op.PUT_TENSOR, [b"k", desc], [np.zeros(3)]))
    with pytest.raises(BadArgumentError, match="payload is missing"):
        h.put_tensor(request(Op.PUT_TENSOR, [b"k", desc]))
    with pytest.raises(ProtocolError, match="kind"):
        h.exists(request(Op.EXISTS, [b"Q", b"k"]))
    with pytest.raises(ProtocolError):
        h.put_dataset(request(Op.PUT_DATASET, [b"d", b"not metadata"]))


def test_handlers_datasets_and_lists():
    h = StoreHandlers(ShardStore())
    a = np.arange(4, dtype=np.int64)
    desc, _ = describe(a)
    meta = pack_metadata({"step": np.array([7], np.int32)}, {"who": ["ocean"]})
    h.put_dataset(request(Op.PUT_DATASET, [b"ds", meta, b"a", desc.pack()], [a]))
    rep = h.get_dataset(request(Op.GET_DATASET, [b"ds"]))
    assert rep.fields[:2] == [b"ds", meta] and np.array_equal(rep.payload[0].view(np.int64), a)
    for i in range(3):
        assert h.list_append(request(Op.LIST_APPEND, [b"l", f"d{i}".encode()])).fields == [U64.pack(i + 1)]
    assert h.list_length(request(Op.LIST_LENGTH, [b"l"])).fields == [U64.pack(3)]
    assert h.list_length(request(Op.LIST_LENGTH, [b"none"])).fields == [U64.pack(0)]
    rng = h.list_range(request(Op.LIST_RANGE, [b"l", (-2).to_bytes(8, "little", signed=True),
                                               (-1).to_bytes(8, "little", signed=True)]))
    assert rng.fields == [b"d1", b"d2"]


# ---------------------------------------------------------------- batching policy

def job(rows: int | None, sig: tuple = ("f32", (4,)), t: float = 0.0) -> Job:
    return Job([], lambda *_: None, rows, sig, enqueued=t)


def test_job_shape_signature_and_rows():
    a, b = np.zeros((3, 4), np.float32), np.zeros((3, 2), np.float64)
    rows, sig = job_shape([a, b])
    assert rows == 3 and sig == (2, ("float32", (4,)), ("float64", (2,)))
    assert job_shape([a, np.zeros((2, 4), np.float32)])[0] is None  # dim 0 differ
    assert job_shape([np.float32(1.0)])[0] is None  # 0-d input


def test_no_batch_size_runs_one_at_a_time():
    q = BatchQueue()
    for _ in range(3):
        q.push(job(2))
    assert [len(q.take(BatchPolicy(0), 0.0)[0]) for _ in range(3)] == [1, 1, 1]
    assert q.take(BatchPolicy(0), 0.0) == ([], None)


def test_joins_up_to_batch_size_in_order_and_skips_incompatible():
    q = BatchQueue()
    jobs = [job(3), job(2, sig=("f64", (4,))), job(4), job(2), job(1)]
    for j in jobs:
        q.push(j)
    group, _ = q.take(BatchPolicy(batch_size=8), 0.0)
    assert group == [jobs[0], jobs[2], jobs[4]]  # 3 + 4 + 1 rows; 2 more would exceed 8
    assert list(q.jobs) == [jobs[1], jobs[3]]


def test_request_larger_than_batch_size_runs_alone():
    q = BatchQueue()
    big, small = job(10), job(1)
    q.push(big)
    q.push(small)
    assert q.take(BatchPolicy(batch_size=4, min_batch_size=4, min_batch_timeout_ms=100), 0.0)[0] == [big]


def test_min_batch_size_waits_until_timeout():
    q = BatchQueue()
    q.push(job(1, t=10.0))
    policy = BatchPolicy(batch_size=8, min_batch_size=3, min_batch_timeout_ms=200)
    group, wait = q.take(policy, 10.05)
    assert group == [] and wait == pytest.approx(0.15)
    q.push(job(1, t=10.06))
    assert q.take(policy, 10.07)[0] == []
    q.push(job(1, t=10.08))
    assert len(q.take(policy, 10.09)[0]) == 3  # enough rows: runs before the timeout
    q.push(job(1, t=20.0))
    assert len(q.take(policy, 20.3)[0]) == 1  # timeout passed: runs short
    q.push(job(1, t=30.0))
    assert q.take(BatchPolicy(8, 3, 0), 99.0) == ([], None)  # no timeout: waits (RedisAI)


def test_split_rows():
    out = np.arange(12).reshape(6, 2)
    a, b, c = split_rows(out, [1, 3, 2])
    assert a.tolist() == [[0, 1]] and b.shape == (3, 2) and c.tolist() == [[8, 9], [10, 11]]
    with pytest.raises(ValueError, match="rows"):
        split_rows(out, [2, 2])


# ---------------------------------------------------------------- the engine, on a numpy runtime

class AffineRunnable:
    """y = scale * x + shift; refuses negative inputs (to fail one request of a batch)."""

    device = "cpu"
    arity = (1, 1)

    def __init__(self, scale: float, calls: list[int]) -> None:
        self.scale = scale
        self.calls = calls

    def __call__(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        (x,) = inputs
        self.calls.append(x.shape[0])
        if (x < 0).any():
            raise ServerRuntimeError("model failed: ValueError: negative input")
        return [self.scale * x + 1]


class NumpyRuntime:
    """A model runtime in a few lines: a "model" is the text ``scale=<float>``."""

    backend: ClassVar[str] = "NUMPY"
    calls: ClassVar[list[int]] = []

    def __init__(self, options: RuntimeOptions) -> None:
        self.options = options

    def load_model(self, name: str, data: bytes, device: str, local_rank: int):
        key, _, value = data.decode().partition("=")
        if key != "scale":
            raise BadArgumentError(f"model {name!r} is not scale=<number>")
        return AffineRunnable(float(value), self.calls), None

    def compile_script(self, name: str, source: str, device: str, local_rank: int):
        raise BadArgumentError("the numpy runtime has no scripts")

    def report(self) -> dict:
        return {"threads": self.options.threads}


@pytest.fixture
def engine(monkeypatch):
    monkeypatch.setitem(runtime_mod.RUNTIMES, "NUMPY", f"{__name__}:NumpyRuntime")
    NumpyRuntime.calls.clear()
    store, loop = ShardStore(), RecordingLoop()
    eng = InferenceEngine(store, loop, None, 0, 1, options=RuntimeOptions(threads=3))
    yield eng, store, loop
    eng.close()


def set_model(name: bytes, data: bytes, batch: tuple[int, int, int] = (0, 0, 0), seq: int = 16,
              backend: bytes = b"NUMPY") -> Request:
    return request(Op.SET_MODEL, [name, backend, b"CPU", b"", *(U64.pack(v) for v in batch)],
                   [np.frombuffer(data, np.uint8)], seq=seq)


def run_model(name: bytes, inputs: list[bytes], outputs: list[bytes], seq: int) -> Request:
    return request(Op.RUN_MODEL, [name, len(inputs).to_bytes(4, "little"), *inputs, *outputs], seq=seq)


def test_engine_loads_runs_and_stores_outputs(engine):
    eng, store, loop = engine
    assert eng.report()["runtimes"] == {}
    eng.set_model(set_model(b"m", b"scale=2"))
    assert loop.wait_reply(16).status == Status.OK
    assert eng.report()["runtimes"] == {"NUMPY": {"threads": 3}}
    store.put_tensor("x", stored(np.arange(4.0).reshape(2, 2)))
    eng.run_model(run_model(b"m", [b"x"], [b"y"], seq=17))
    assert loop.wait_reply(17).status == Status.OK
    assert store.get(Kind.TENSOR, "y").array().tolist() == [[1.0, 3.0], [5.0, 7.0]]
    assert store.get(Kind.TENSOR, "x").array().tolist() == [[0.0, 1.0], [2.0, 3.0]]
    model = eng.report()["models"]["m"]
    assert model["requests"] == 1 and model["backend"] == "NUMPY" and model["version"] == 1


def test_engine_batches_and_fails_only_the_bad_request(engine):
    eng, store, loop = engine
    eng.set_model(set_model(b"m", b"scale=10", batch=(8, 4, 0)))
    loop.wait_reply(16)
    for i in range(4):
        store.put_tensor(f"x{i}", stored(np.full((1, 3), -1.0 if i == 2 else float(i))))
    for i in range(3):  # three rows wait: min_batch_size 4 holds them
        eng.run_model(run_model(b"m", [f"x{i}".encode()], [f"y{i}".encode()], seq=20 + i))
    time.sleep(0.05)
    loop.pump(lambda: True)
    assert not loop.replies and NumpyRuntime.calls == []
    eng.run_model(run_model(b"m", [b"x3"], [b"y3"], seq=23))
    reps = [loop.wait_reply(20 + i) for i in range(4)]
    assert [r.status for r in reps] == [Status.OK, Status.OK, Status.RUNTIME_ERROR, Status.OK]
    assert b"negative input" in reps[2].fields[0]
    assert NumpyRuntime.calls == [4, 1, 1, 1, 1]  # one batch of 4 rows failed, then each alone
    assert store.get(Kind.TENSOR, "y3").array().tolist() == [[31.0, 31.0, 31.0]]
    assert not store.exists(Kind.TENSOR, "y2")
    stats = eng.report()["models"]["m"]
    assert stats["requests"] == 4 and stats["batches"] == 5 and stats["errors"] == 1


def test_engine_errors_are_typed(engine):
    eng, store, loop = engine
    with pytest.raises(BadArgumentError, match="not supported: convert the TensorFlow model to ONNX"):
        eng.set_model(set_model(b"m", b"scale=1", backend=b"TF"))
    with pytest.raises(BadArgumentError, match="min_batch_size needs a batch_size"):
        eng.set_model(set_model(b"m", b"scale=1", batch=(0, 2, 0)))
    eng.set_model(set_model(b"bad", b"junk", seq=30))
    rep = loop.wait_reply(30)
    assert rep.status == Status.BAD_ARGUMENT and b"scale=<number>" in rep.fields[0]
    with pytest.raises(KeyNotFoundError):
        eng.run_model(run_model(b"missing", [b"x"], [b"y"], seq=31))
    eng.set_model(set_model(b"m", b"scale=1", seq=32))
    loop.wait_reply(32)
    with pytest.raises(BadArgumentError, match="takes 1 inputs, 2 given"):
        eng.run_model(run_model(b"m", [b"a", b"b"], [b"y"], seq=33))
    with pytest.raises(KeyNotFoundError, match="tensor 'nope'"):
        eng.run_model(run_model(b"m", [b"nope"], [b"y"], seq=34))
    store.put_tensor("x", stored(np.ones(2)))
    eng.run_model(run_model(b"m", [b"x"], [b"y", b"z"], seq=35))
    rep = loop.wait_reply(35)
    assert rep.status == Status.BAD_ARGUMENT and b"returned 1 tensors, 2 output keys" in rep.fields[0]


def test_deleting_a_model_fails_its_queued_requests(engine):
    eng, store, loop = engine
    eng.set_model(set_model(b"m", b"scale=1", batch=(8, 8, 0)))  # waits for 8 rows, forever
    loop.wait_reply(16)
    store.put_tensor("x", stored(np.ones((1, 2))))
    eng.run_model(run_model(b"m", [b"x"], [b"y"], seq=40))
    eng.delete(Kind.MODEL, "m")
    rep = loop.wait_reply(40)
    assert rep.status == Status.NOT_FOUND and b"deleted before it ran" in rep.fields[0]
    assert eng.exists(Kind.MODEL, "m").fields == [b"\x00"]


def test_a_server_without_models_does_not_import_torch():
    code = ("import sys; import mpistage.server.app, mpistage.server.engine; "
            "from mpistage.server.engine import InferenceEngine; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


# ---------------------------------------------------------------- links: window budget, accept thread

def test_window_budget_shrinks_slots_to_the_cap():
    budget = WindowBudget(cap=1 << 20)
    assert budget.slot_for(2, 16 << 20) == 512 << 10
    assert budget.slot_for(4, 16 << 20) == 256 << 10
    assert budget.slot_for(5, 16 << 20) == 0  # under RMA_MIN_BYTES: no window at all
    assert budget.slot_for(1, 300 << 10) == 300 << 10
    budget.take(768 << 10)
    assert budget.slot_for(1, 16 << 20) == 256 << 10 and budget.slot_for(2, 16 << 20) == 0
    budget.give_back(768 << 10)
    assert budget.slot_for(2, 16 << 20) == 512 << 10
