"""The ADIOS2 backend's store: ``Client`` calls over one ADIOS2 engine (SST stream or BP5 file),
opened as a writer or as a reader. Layout: ``adios2_layout``; options: ``adios2_config``.

Steps. A coupling step is an ADIOS2 step. A writer begins a step at its first put after
``flush()`` and publishes it at the next ``flush()`` (or ``close()``): a reader sees a step whole
or not at all, never a step the writer has not ended. A reader begins a step at its first access
after ``flush()`` (waiting up to ``timeout_s`` for one) and keeps reading that step until
``flush()`` ends it. ``with store.step():`` does both ends explicitly.

What does not map to a stream or file (models, scripts, aggregation lists, deletes, copies,
snapshots) raises BadArgumentError naming the MPI backend.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import adios2.bindings as ab
import numpy as np

from ..backoff import wait_until
from ..dataset import Dataset
from ..errors import BadArgumentError, KeyNotFoundError, MpistageError, ServerUnreachableError
from ..protocol import Kind, TensorDesc, describe
from . import adios2_layout as lay
from .adios2_config import Adios2Options
from .base import Backend, Into, ModelSpec

NEEDS_MPI = "needs the MPI backend (Client(backend='mpi')): the adios2 backend only streams tensors and datasets"


class StepTimeoutError(MpistageError, TimeoutError):
    """No step arrived within the reader's ``timeout_s`` (ADIOS2's ``StepStatus.NotReady``); the
    stream is still open: try again, or close."""


class EndOfStreamError(ServerUnreachableError):
    """The writer has closed the stream or file (or gone away), and no step is left to read."""


def open_store(options: Adios2Options) -> Backend:
    """Open the engine ``options`` name and wrap it as a :class:`Backend`."""
    return Backend("adios2", Adios2Store(options), Adios2Engine())


class Adios2Store:
    """The store half (see :class:`mpistage.backends.base.StoreBackend`) over one engine."""

    def __init__(self, options: Adios2Options) -> None:
        self.options = options
        self._lock = threading.RLock()
        self._adios = ab.ADIOS()
        self._io = self._adios.DeclareIO(f"mpistage:{options.mode}:{options.path}")
        self._io.SetEngine(options.engine)
        self._io.SetParameters(options.engine_params())
        self._writer = options.mode == "writer"
        try:
            self._engine = self._io.Open(options.path, ab.Mode.Write if self._writer else ab.Mode.Read)
        except (RuntimeError, ValueError) as exc:
            raise ServerUnreachableError(
                f"cannot open ADIOS2 {options.engine} {options.path!r} as {options.mode}"
                f"{' (no writer appeared within ' + str(options.timeout_s) + ' s?)' if not self._writer else ''}:"
                f" {_adios_message(exc)}") from exc
        self.closed = False
        self._in_step = False
        self.steps_done = 0          # steps ended by this process
        self.steps_missed = 0        # reader: steps the writer published that this reader never saw
        self._last_step = -1         # reader: the writer's index of the step last begun
        self._put: set[str] = set()  # writer: variables put in the open step
        self._defined: dict[str, tuple[np.dtype, int]] = {}
        self._attributes: dict[str, Any] = {}
        self._variables: dict[str, dict[str, str]] = {}
        self._attribute_names: list[str] = []

    # ------------------------------------------------------------ steps
    @property
    def nshards(self) -> int:
        return 1

    @property
    def in_step(self) -> bool:
        """Whether a step is open."""
        return self._in_step

    @property
    def current_step(self) -> int:
        """The open (or last) step's index: the writer's count for a reader."""
        return self._last_step if not self._writer else self.steps_done

    def begin_step(self) -> None:
        """Open a step now (a reader waits up to ``timeout_s`` for one); nothing if one is open.
        A reader raises StepTimeoutError when none comes in time and EndOfStreamError when the
        writer has closed the stream."""
        with self._lock:
            self._check_open()
            if self._in_step:
                return
            if self._writer:
                self._engine.BeginStep()
                self._put.clear()
                self._in_step = True
                return
            status = self._poll_step()
            if status == ab.StepStatus.NotReady:
                raise StepTimeoutError(
                    f"no step arrived on ADIOS2 {self.options.engine} {self.options.path!r} within "
                    f"{self.options.timeout_s} s (the writer is slow, stuck or between steps)")
            if status == ab.StepStatus.EndOfStream:
                raise EndOfStreamError(f"the writer of {self.options.path!r} has closed it: no step is left")
            if status != ab.StepStatus.OK:
                raise ServerUnreachableError(f"ADIOS2 {self.options.path!r}: begin_step failed ({status})")
            step = int(self._engine.CurrentStep())
            self.steps_missed += max(0, step - self._last_step - 1)
            self._last_step = step
            self._variables = dict(self._io.AvailableVariables())
            self._attribute_names = sorted(self._io.AvailableAttributes())
            self._in_step = True

    def flush(self) -> None:
        """End the open step: a writer publishes it, a reader releases it (the next access waits
        for the next one). Nothing when no step is open."""
        with self._lock:
            self._check_open()
            if self._in_step:
                self._engine.EndStep()
                self._in_step = False
                self.steps_done += 1

    @contextmanager
    def step(self) -> Iterator[Adios2Store]:
        """``with store.step():`` begins a step (a reader waits for it) and ends it on exit,
        also when the block raises (a writer then publishes what it had put)."""
        self.begin_step()
        try:
            yield self
        finally:
            if not self.closed:
                self.flush()

    def variables(self) -> list[str]:
        """A reader's variable names in the current step (beginning one if none is open)."""
        with self._lock:
            self._reading("variables")
            return sorted(self._variables)

    # ------------------------------------------------------------ tensors
    def put_tensor(self, key: str, array: np.ndarray) -> None:
        describe(array)  # TypeError for a dtype mpistage does not stage
        with self._lock:
            self._writing(f"put_tensor({key!r})")
            self._write_variable(key, array)

    def get_tensor(self, key: str, into: Into | None = None) -> np.ndarray:
        with self._lock:
            self._reading(f"get_tensor({key!r})")
            if key not in self._variables:
                raise KeyNotFoundError(self._missing("tensor", key))
            fortran = self._attribute(lay.attribute_of(key, lay.ORDER_ATTR)) == ["F"]
            data = self._read_variable(key)
        if fortran:
            data = np.asfortranarray(data)
        if into is None:
            return data
        target = into(TensorDesc(data.dtype, data.shape, 1 if fortran and data.ndim > 1 else 0))
        target[...] = data
        return target

    # ------------------------------------------------------------ any kind
    def exists(self, kind: Kind, key: str) -> bool:
        with self._lock:
            self._reading("exists")
            if kind in (Kind.TENSOR, Kind.ANY) and key in self._variables:
                return True
            return kind in (Kind.DATASET, Kind.ANY) and self._is_dataset(key)

    def delete(self, kind: Kind, key: str) -> None:
        raise BadArgumentError(f"deleting {key!r} {NEEDS_MPI} (an ADIOS2 step cannot be changed once published)")

    def copy(self, kind: Kind, src: str, dst: str, rename: bool = False) -> None:
        raise BadArgumentError(f"{'renaming' if rename else 'copying'} {src!r} {NEEDS_MPI}")

    # ------------------------------------------------------------ datasets
    def put_dataset(self, key: str, dataset: Dataset) -> None:
        names = dataset.get_tensor_names()
        scalars, strings = dataset.metadata_arrays()
        with self._lock:
            self._writing(f"put_dataset({key!r})")
            for field in list(scalars) + list(strings):
                if field.startswith("mpistage.") or lay.SEP in field:
                    raise BadArgumentError(f"metadata field {field!r}: no '/' and no 'mpistage.' prefix over ADIOS2")
            for name in names:
                self._write_variable(lay.dataset_variable(key, name), dataset.get_tensor(name))
            self._define_attribute(lay.attribute_of(key, lay.TENSORS_ATTR), lay.encode_names(names))
            for field, values in scalars.items():
                self._define_attribute(lay.attribute_of(key, field), np.ascontiguousarray(values))
            for field, texts in strings.items():
                if len(texts) > 1 and self.options.engine == "SST":
                    raise BadArgumentError(f"metadata field {field!r} holds {len(texts)} strings: string-array "
                                           "attributes arrive empty over SST (adios2 2.12); use one string per field")
                self._define_attribute(lay.attribute_of(key, field), texts[0] if len(texts) == 1 else list(texts))

    def get_dataset(self, key: str) -> Dataset:
        with self._lock:
            self._reading(f"get_dataset({key!r})")
            if not self._is_dataset(key):
                raise KeyNotFoundError(self._missing("dataset", key))
            listed = self._attribute(lay.attribute_of(key, lay.TENSORS_ATTR))
            names = (lay.decode_names(listed) if isinstance(listed, list)
                     else lay.dataset_members(key, sorted(self._variables)))
            tensors: dict[str, np.ndarray] = {}
            for name in names:
                var = lay.dataset_variable(key, name)
                if var not in self._variables:
                    raise KeyNotFoundError(
                        f"dataset {key!r} lists tensor {name!r}, but step {self._last_step} lacks it")
                data = self._read_variable(var)
                if self._attribute(lay.attribute_of(var, lay.ORDER_ATTR)) == ["F"]:
                    data = np.asfortranarray(data)
                tensors[name] = data
            scalars: dict[str, np.ndarray] = {}
            strings: dict[str, list[str]] = {}
            for field in lay.metadata_fields(key, self._attribute_names):
                value = self._attribute(lay.attribute_of(key, field))
                if isinstance(value, np.ndarray):
                    scalars[field] = value.reshape(-1)
                elif value is not None:
                    strings[field] = list(value)
        return Dataset.from_parts(key, tensors, scalars, strings)

    # ------------------------------------------------------------ what does not map
    def list_append(self, key: str, item: str) -> None:
        raise BadArgumentError(f"aggregation lists {NEEDS_MPI}")

    def list_length(self, key: str) -> int:
        raise BadArgumentError(f"aggregation lists {NEEDS_MPI}")

    def list_range(self, key: str, start: int, end: int) -> list[str]:
        raise BadArgumentError(f"aggregation lists {NEEDS_MPI}")

    def save(self) -> list[str]:
        raise BadArgumentError(f"snapshots {NEEDS_MPI} (a BP5 file is already one)")

    # ------------------------------------------------------------ housekeeping
    def server_info(self) -> list[dict[str, Any]]:
        return [{"shard": 0, "nshards": 1, "backend": "adios2", "engine": self.options.engine,
                 "path": self.options.path, "mode": self.options.mode, "in_step": self._in_step,
                 "steps_done": self.steps_done, "current_step": self.current_step,
                 "steps_missed": self.steps_missed, "variables": len(self._variables) or len(self._defined)}]

    def shutdown_servers(self) -> None:
        self.close()

    def close(self) -> None:
        """End the open step (a writer publishes it) and close the engine; later calls raise
        ServerUnreachableError."""
        with self._lock:
            if self.closed:
                return
            try:
                if self._in_step:
                    self._engine.EndStep()
                    self.steps_done += 1
                self._engine.Close()
            finally:
                self._in_step = False
                self.closed = True

    # ------------------------------------------------------------ helpers
    def _poll_step(self) -> Any:
        """A reader's BeginStep, polled (timeout 0) until a step comes or ``timeout_s`` passes.
        SST's own timed BeginStep can crash or hang the reader when the timeout ends while a
        step is arriving (ADIOS2 issue 1862; seen here as a SIGSEGV under load), polling cannot."""
        status = ab.StepStatus.NotReady

        def ready() -> bool:
            nonlocal status
            status = self._engine.BeginStep(ab.StepMode.Read, 0.0)
            return status != ab.StepStatus.NotReady

        wait_until(ready, timeout=float(self.options.timeout_s))
        return status

    def _check_open(self) -> None:
        if self.closed:
            raise ServerUnreachableError(f"the ADIOS2 {self.options.engine} {self.options.path!r} has been closed")

    def _writing(self, what: str) -> None:
        if not self._writer:
            raise BadArgumentError(f"{what}: this ADIOS2 client is a reader of {self.options.path!r}; "
                                   "open one with mode='writer' to put")
        self.begin_step()

    def _reading(self, what: str) -> None:
        if self._writer:
            raise BadArgumentError(f"{what}: this ADIOS2 client is a writer of {self.options.path!r}; "
                                   "open one with mode='reader' to get")
        self.begin_step()

    def _missing(self, what: str, key: str) -> str:
        return (f"{what} {key!r} is not in step {self._last_step} of ADIOS2 {self.options.engine} "
                f"{self.options.path!r} (flush() moves to the next step)")

    def _is_dataset(self, key: str) -> bool:
        return (lay.attribute_of(key, lay.TENSORS_ATTR) in self._attribute_names
                or bool(lay.dataset_members(key, list(self._variables))))

    def _write_variable(self, name: str, array: np.ndarray) -> None:
        if name in self._put:
            raise BadArgumentError(f"{name!r} was already put in this step (flush() ends the step)")
        data = lay.c_layout(array)
        shape = list(data.shape)
        known = self._defined.get(name)
        if known is None:
            var = self._io.DefineVariable(name, data, shape, [0] * data.ndim, shape, False)
            self._defined[name] = (data.dtype, data.ndim)
            if data.ndim:
                self._define_attribute(lay.attribute_of(name, lay.DIMENSIONS_ATTR),
                                       lay.dimension_names(name, data.ndim, self.options.dimensions))
            if lay.is_fortran(array):
                self._define_attribute(lay.attribute_of(name, lay.ORDER_ATTR), "F")
        else:
            if known != (data.dtype, data.ndim):
                raise BadArgumentError(f"{name!r} was first put as {known[0]} with {known[1]} dims; ADIOS2 "
                                       f"variables keep their type and rank, this is {data.dtype} with {data.ndim}")
            var = self._io.InquireVariable(name)
            if data.ndim:
                var.SetShape(shape)
                var.SetSelection([[0] * data.ndim, shape])
        self._engine.Put(var, data if data.ndim else data.reshape(1), ab.Mode.Sync)
        self._put.add(name)

    def write_blocks(self, name: str, shape: list[int], blocks: list[tuple[list[int], np.ndarray]]) -> None:
        """Put one global variable ``name`` of ``shape`` made of ``blocks`` (start, C-ordered array):
        each block is an ADIOS2 block with its own start and count (see ``adios2_decomp``)."""
        with self._lock:
            self._writing(f"write_blocks({name!r})")
            if name in self._put:
                raise BadArgumentError(f"{name!r} was already put in this step (flush() ends the step)")
            dtype = blocks[0][1].dtype.newbyteorder("=")
            known = self._defined.get(name)
            var = self._io.InquireVariable(name) if known else None
            for start, block in blocks:
                data = np.ascontiguousarray(block, dtype=dtype)
                if var is None:
                    var = self._io.DefineVariable(name, data, list(shape), list(start), list(data.shape), False)
                    self._defined[name] = (dtype, len(shape))
                    self._define_attribute(lay.attribute_of(name, lay.DIMENSIONS_ATTR),
                                           lay.dimension_names(name, len(shape), self.options.dimensions))
                elif known is not None and known != (dtype, len(shape)):
                    raise BadArgumentError(f"{name!r} was first put as {known[0]} with {known[1]} dims")
                else:
                    var.SetShape(list(shape))
                    var.SetSelection([list(start), list(data.shape)])
                self._engine.Put(var, data, ab.Mode.Sync)
            self._put.add(name)

    def _read_variable(self, name: str) -> np.ndarray:
        var = self._io.InquireVariable(name)
        dtype = lay.numpy_dtype(var.Type(), name)
        if var.ShapeID() == ab.ShapeID.LocalArray:
            raise BadArgumentError(f"ADIOS2 variable {name!r} is a local array (no global shape): "
                                   "read its blocks with adios2 itself")
        shape = [int(n) for n in var.Shape()]
        if var.SingleValue() or not shape:
            out = np.empty(1, dtype)
            self._engine.Get(var, out, ab.Mode.Sync)
            return out.reshape(())
        var.SetSelection([[0] * len(shape), shape])
        out = np.empty(shape, dtype)
        self._engine.Get(var, out, ab.Mode.Sync)
        return out

    def _define_attribute(self, name: str, value: Any) -> None:
        """Attributes cannot change in ADIOS2's Python API: define once, accept the same again."""
        previous = self._attributes.get(name)
        if previous is not None:
            same = (np.array_equal(previous, value) if isinstance(value, np.ndarray) else previous == value)
            if not same:
                raise BadArgumentError(f"attribute {name!r} was {previous!r} and cannot change over ADIOS2 "
                                       f"(now {value!r}): give the dataset a new name per step")
            return
        self._io.DefineAttribute(name, value)
        self._attributes[name] = value.copy() if isinstance(value, np.ndarray) else value

    def _attribute(self, name: str) -> np.ndarray | list[str] | None:
        """A reader's attribute: a string list, a numeric array, or None when there is none."""
        if name not in self._attribute_names:
            return None
        attr = self._io.InquireAttribute(name)
        if attr.Type() == "string":
            return list(attr.DataString())
        return np.asarray(attr.Data())


class Adios2Engine:
    """The engine half: every call says that models and scripts need the MPI backend."""

    def _refuse(self, what: str) -> BadArgumentError:
        return BadArgumentError(f"{what} {NEEDS_MPI}")

    def set_model(self, key: str, data: bytes, spec: ModelSpec) -> None:
        raise self._refuse("set_model")

    def get_model(self, key: str) -> bytes:
        raise self._refuse("get_model")

    def set_script(self, key: str, source: str, device: str) -> None:
        raise self._refuse("set_script")

    def get_script(self, key: str) -> str:
        raise self._refuse("get_script")

    def delete_code(self, kind: Kind, key: str) -> None:
        raise self._refuse("deleting a model or script")

    def model_exists(self, key: str) -> bool:
        raise self._refuse("model_exists")

    def run_model(self, key: str, inputs: Any, outputs: Any, timeout_ms: int = 0) -> Any:
        raise self._refuse("run_model")

    def run_script(self, key: str, function: str, inputs: Any, outputs: Any, timeout_ms: int = 0) -> Any:
        raise self._refuse("run_script")


def _adios_message(exc: BaseException) -> str:
    """ADIOS2's exception text without its colour codes and time stamp."""
    text = str(exc)
    for code in ("\x1b[1;36m", "\x1b[1;34m", "\x1b[0m"):
        text = text.replace(code, "")
    return text.split("]", 1)[-1].strip() if text.startswith("[") else text.strip()
