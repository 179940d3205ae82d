"""The model and script half of ``Client`` (SmartRedis's names): store TorchScript models and
scripts on every shard, run them on tensors in the store, synchronously or not.

Mixed into :class:`mpistage.Client`; the wire layouts are in ``docs/engine.md``.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._mpi.connection import PendingReply, ServerConnection
from .errors import BadArgumentError, MpistageError
from .protocol import U32, U64, Kind, Op

DEVICES = ("CPU", "GPU")


class RunHandle:
    """A ``run_model_async``/``run_script_async`` call in flight: ``done()`` says whether it has
    finished, ``wait()`` waits for it and raises what the run raised (each call of ``wait`` after
    the first returns or raises the same)."""

    def __init__(self, conn: ServerConnection, pending: PendingReply, what: str) -> None:
        self._conn = conn
        self._pending = pending
        self.what = what
        self._finished = False
        self._error: MpistageError | None = None

    def done(self) -> bool:
        """True when the run has finished (successfully or not); never waits."""
        return self._finished or self._conn.test(self._pending)

    def wait(self, timeout: float | None = None) -> None:
        """Wait until the run has finished; raises its error (KeyNotFoundError, BadArgumentError,
        ServerRuntimeError...), or TimeoutError when ``timeout`` seconds pass first (the run goes
        on; wait again later). Polls with short sleeps, so waiting ranks leave the cores to the
        servers."""
        if not self._finished:
            deadline = None if timeout is None else time.monotonic() + timeout
            spin_until = time.monotonic() + 50e-6
            sleep = 0.0
            while not self._conn.test(self._pending):
                now = time.monotonic()
                if deadline is not None and now > deadline:
                    raise TimeoutError(f"{self.what} has not finished within {timeout} s")
                if now < spin_until:
                    os.sched_yield()
                    continue
                sleep = min(1e-3, max(2 * sleep, 20e-6))
                time.sleep(sleep)
            self._finished = True
            try:
                self._conn.finish(self._pending)
            except MpistageError as exc:
                self._error = exc
        if self._error is not None:
            raise self._error


class EngineClientMixin:
    """Models and scripts; needs the ``Client`` attributes ``_conn``, ``_key`` and ``_shard``."""

    _conn: ServerConnection
    _key: Callable[..., str]
    _shard: Callable[[str], int]

    # ------------------------------------------------------------ models
    def set_model(self, name: str, model: Any, backend: str = "TORCH", device: str = "CPU",
                  batch_size: int = 0, min_batch_size: int = 0, min_batch_timeout: int = 0,
                  tag: str = "", inputs: Sequence[str] | None = None,
                  outputs: Sequence[str] | None = None, example_inputs: Any = None) -> None:
        """Store a model on every shard under ``name`` (replacing one of that name atomically).

        ``model``: the bytes of a TorchScript file (``torch.jit.save``), a ``ScriptModule``, or a
        ``torch.nn.Module``, which is scripted here (or traced with ``example_inputs`` when given).
        ``device`` "CPU" or "GPU" (see docs/engine.md for GPU on a machine without one).
        ``batch_size``, ``min_batch_size``, ``min_batch_timeout`` (ms): dynamic batching, with
        RedisAI's meaning. ``inputs``/``outputs`` are TensorFlow-only in SmartRedis and ignored.
        Raises BadArgumentError for a backend other than TORCH, a bad device or batching
        settings, or bytes that are not a TorchScript archive.
        """
        self._send_model(name, _model_bytes(model, example_inputs), backend, device, batch_size,
                         min_batch_size, min_batch_timeout, tag)

    def set_model_from_file(self, name: str, model_file: str | os.PathLike[str], backend: str = "TORCH",
                            device: str = "CPU", batch_size: int = 0, min_batch_size: int = 0,
                            min_batch_timeout: int = 0, tag: str = "",
                            inputs: Sequence[str] | None = None,
                            outputs: Sequence[str] | None = None) -> None:
        """:meth:`set_model` with the bytes of a TorchScript file (``torch.jit.save``)."""
        self._send_model(name, Path(model_file).read_bytes(), backend, device, batch_size,
                         min_batch_size, min_batch_timeout, tag)

    def _send_model(self, name: str, data: bytes, backend: str, device: str, batch_size: int,
                    min_batch_size: int, min_batch_timeout: int, tag: str) -> None:
        if backend != "TORCH":
            raise BadArgumentError(f"backend {backend!r} is not supported (only TORCH)")
        for value, what in ((batch_size, "batch_size"), (min_batch_size, "min_batch_size"),
                            (min_batch_timeout, "min_batch_timeout")):
            if int(value) < 0:
                raise BadArgumentError(f"{what} must not be negative")
        fields = [backend.encode(), _device(device).encode(), tag.encode(), U64.pack(int(batch_size)),
                  U64.pack(int(min_batch_size)), U64.pack(int(min_batch_timeout))]
        self._to_every_shard(Op.SET_MODEL, self._key(name, Kind.MODEL, False), fields,
                             np.frombuffer(data, np.uint8))

    def get_model(self, name: str) -> bytes:
        """The TorchScript file bytes stored under ``name``; raises KeyNotFoundError."""
        key = self._key(name, Kind.MODEL)
        conn = self._conn
        with conn.lock:
            pending = conn.start(self._shard(key), Op.GET_MODEL, [key.encode()])
            header, fields = conn.finish(pending)
            data = np.empty(U64.unpack(fields[0])[0], np.uint8)
            conn.receive_payload(pending, header, fields, [data])
        return data.tobytes()

    def delete_model(self, name: str) -> None:
        """Remove the model from every shard; raises KeyNotFoundError when there is none."""
        self._keyed_every_shard(Op.DELETE, Kind.MODEL, self._key(name, Kind.MODEL, False))

    def model_exists(self, name: str) -> bool:
        key = self._key(name, Kind.MODEL)
        return bool(self._conn.request(self._shard(key), Op.EXISTS, [b"M", key.encode()])[0][0])

    def poll_model(self, name: str, poll_frequency_ms: int, num_tries: int) -> bool:
        for attempt in range(num_tries):
            if self.model_exists(name):
                return True
            if attempt + 1 < num_tries:
                time.sleep(poll_frequency_ms / 1000)
        return False

    def run_model(self, name: str, inputs: str | Sequence[str], outputs: str | Sequence[str]) -> None:
        """Run model ``name`` on the tensors under the ``inputs`` keys, store its outputs under
        the ``outputs`` keys. Runs on the shard holding the first input; requests that arrive
        together may share one batched forward pass. Raises KeyNotFoundError (no such model or
        input), BadArgumentError (wrong number of inputs or outputs), ServerRuntimeError (the
        model raised: wrong shape or dtype, out of memory...)."""
        self.run_model_async(name, inputs, outputs).wait()

    def run_model_async(self, name: str, inputs: str | Sequence[str],
                        outputs: str | Sequence[str]) -> RunHandle:
        """Start :meth:`run_model` and return at once; ``handle.wait()`` gives its result."""
        ins, outs = self._run_keys(inputs, outputs)
        fields = [self._key(name, Kind.MODEL).encode(), U32.pack(len(ins)),
                  *(k.encode() for k in ins), *(k.encode() for k in outs)]
        return RunHandle(self._conn, self._conn.start(self._shard(ins[0]), Op.RUN_MODEL, fields),
                         f"run_model({name!r})")

    # ------------------------------------------------------------ scripts
    def set_script(self, name: str, script: str, device: str = "CPU") -> None:
        """Store TorchScript source (one or more ``def``s) on every shard under ``name``.
        Raises BadArgumentError when it does not compile."""
        if not isinstance(script, str):
            raise TypeError("set_script takes TorchScript source as a str")
        self._to_every_shard(Op.SET_SCRIPT, self._key(name, Kind.SCRIPT, False),
                             [_device(device).encode()], np.frombuffer(script.encode(), np.uint8))

    def set_script_from_file(self, name: str, file: str | os.PathLike[str], device: str = "CPU") -> None:
        self.set_script(name, Path(file).read_text(), device)

    def set_function(self, name: str, function: Callable[..., Any], device: str = "CPU") -> None:
        """Store a Python function as a script (it is compiled with ``torch.jit.script`` here and
        its TorchScript code is sent): run it with ``run_script(name, function.__name__, ...)``.
        The function must be self-contained (it may call torch, not other Python functions)."""
        import torch

        self.set_script(name, torch.jit.script(function).code, device)

    def get_script(self, name: str) -> str:
        """The TorchScript source stored under ``name``; raises KeyNotFoundError."""
        key = self._key(name, Kind.SCRIPT)
        return bytes(self._conn.request(self._shard(key), Op.GET_SCRIPT, [key.encode()])[0]).decode()

    def delete_script(self, name: str) -> None:
        self._keyed_every_shard(Op.DELETE, Kind.SCRIPT, self._key(name, Kind.SCRIPT, False))

    def run_script(self, name: str, fn_name: str, inputs: str | Sequence[str],
                   outputs: str | Sequence[str]) -> None:
        """Call function ``fn_name`` of script ``name`` with the input tensors as positional
        arguments; store what it returns (a tensor or a tuple of tensors) under ``outputs``.
        Errors as for :meth:`run_model`."""
        self.run_script_async(name, fn_name, inputs, outputs).wait()

    def run_script_async(self, name: str, fn_name: str, inputs: str | Sequence[str],
                         outputs: str | Sequence[str]) -> RunHandle:
        ins, outs = self._run_keys(inputs, outputs)
        fields = [self._key(name, Kind.SCRIPT).encode(), fn_name.encode(), U32.pack(len(ins)),
                  *(k.encode() for k in ins), *(k.encode() for k in outs)]
        return RunHandle(self._conn, self._conn.start(self._shard(ins[0]), Op.RUN_SCRIPT, fields),
                         f"run_script({name!r}, {fn_name!r})")

    # ------------------------------------------------------------ helpers
    def _run_keys(self, inputs: str | Sequence[str], outputs: str | Sequence[str]) -> tuple[list[str], list[str]]:
        ins = [inputs] if isinstance(inputs, str) else list(inputs)
        outs = [outputs] if isinstance(outputs, str) else list(outputs)
        if not ins:
            raise BadArgumentError("a run needs at least one input key")
        return ([self._key(k, Kind.TENSOR) for k in ins],
                [self._key(k, Kind.TENSOR, False) for k in outs])

    def _to_every_shard(self, op: Op, key: str, fields: list[bytes], payload: np.ndarray) -> None:
        """Send one request to every shard at once, wait for all, raise the first error."""
        self._all_shards([self._conn.start(s, op, [key.encode(), *fields], [payload])
                          for s in range(self._conn.nshards)])

    def _keyed_every_shard(self, op: Op, kind: Kind, key: str) -> None:
        self._all_shards([self._conn.start(s, op, [bytes([kind]), key.encode()])
                          for s in range(self._conn.nshards)])

    def _all_shards(self, pendings: list[PendingReply]) -> None:
        first: MpistageError | None = None
        for p in pendings:
            try:
                self._conn.finish(p)
            except MpistageError as exc:
                first = first or exc
        if first is not None:
            raise first


def _device(device: str) -> str:
    if device not in DEVICES:
        raise BadArgumentError(f"device {device!r} is not CPU or GPU")
    return device


def _model_bytes(model: Any, example_inputs: Any) -> bytes:
    """TorchScript file bytes of ``model`` (bytes, a ScriptModule, or an nn.Module)."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model)
    if isinstance(model, (str, os.PathLike)):
        raise TypeError("set_model takes the model's bytes or a torch module; use "
                        "set_model_from_file for a file")
    import torch

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"set_model takes bytes or a torch.nn.Module, not {type(model).__name__}")
    if not isinstance(model, torch.jit.ScriptModule):
        model = model.eval()
        if example_inputs is None:
            model = torch.jit.script(model)
        else:
            example = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
            model = torch.jit.trace(model, example)
    buf = io.BytesIO()
    torch.jit.save(model, buf)
    return buf.getvalue()
