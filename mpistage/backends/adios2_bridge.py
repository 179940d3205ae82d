"""The ADIOS2 end of the servers' bridge (``mpistage/server/bridge.py``): an :class:`ExportWriter`
publishes one ADIOS2 step of chosen store values, an :class:`IngestReader` reads the steps of a
stream (or file) that a plain-adios2 program writes. Both wrap an :class:`Adios2Store`, so the
layout is the ADIOS2 backend's (docs/adios2.md, "Layout").

A shard imports this module (and with it ``adios2``) only when a bridge operation arrives.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

from ..dataset import Dataset
from ..errors import BadArgumentError
from .adios2_config import Adios2Options
from .adios2_store import Adios2Store, EndOfStreamError, StepTimeoutError

#: An ingest waits for a step in slices this long, so that a stop is seen between them.
POLL_SLICE_S = 0.5


class ExportWriter:
    """A writer of one ADIOS2 engine (``engine`` "BP5" or "SST", at ``path``); each
    :meth:`write` is one step. Opening an SST writer whose ``params`` ask for readers
    (``RendezvousReaderCount``) waits for them."""

    def __init__(self, engine: str, path: str, params: Mapping[str, str],
                 dimensions: Mapping[str, tuple[str, ...]]) -> None:
        self.store = Adios2Store(Adios2Options(engine, path, "writer", params=dict(params),
                                               dimensions=dict(dimensions)))

    def write(self, tensors: Mapping[str, np.ndarray], datasets: Mapping[str, Dataset]) -> int:
        """Put ``tensors`` and ``datasets`` in one step and publish it (an empty step when both
        are empty, so that every shard's step ``n`` is the same export step); returns its index.
        Raises what the ADIOS2 backend raises (BadArgumentError for a variable whose dtype or rank
        changed, or metadata that changed); the step is published with what was put before."""
        step = self.store.steps_done
        self.store.begin_step()  # a step even when this shard has none of the keys: indices match
        try:
            for key, array in tensors.items():
                self.store.put_tensor(key, array)
            for name, dataset in datasets.items():
                self.store.put_dataset(name, dataset)
        finally:
            self.store.flush()
        return step

    def close(self) -> None:
        """Close the engine (readers then reach the end of the stream)."""
        self.store.close()


class IngestReader:
    """A reader of one ADIOS2 engine; waits up to ``timeout_s`` for the writer at open and for
    each step. Raises ServerUnreachableError at open when no writer appears in time."""

    def __init__(self, engine: str, path: str, timeout_s: float, params: Mapping[str, str]) -> None:
        self.timeout_s = timeout_s
        #: whether the writer has ended the stream (and every step was read)
        self.ended = False
        #: variables that are not tensors (local arrays, strings), with why, by name
        self.skipped: dict[str, str] = {}
        opening = {"OpenTimeoutSecs": str(max(1, math.ceil(timeout_s))), **params}
        self.store = Adios2Store(Adios2Options(engine, path, "reader", POLL_SLICE_S, opening))

    def next_step(self, stopped: Callable[[], bool],
                  key_of: Callable[[str, int], str | None]) -> tuple[int, dict[str, np.ndarray]] | None:
        """The next step's index and its variables, each under ``key_of(name, step)`` (variables
        for which it gives None are not read); None when the writer has ended the stream
        (:attr:`ended`) or ``stopped()`` is true while no step is ready. Raises StepTimeoutError
        when no step comes within ``timeout_s``. Variables that are not tensors are left out (see
        :attr:`skipped`). The step stays open until :meth:`release`."""
        waited = 0.0
        while True:
            try:
                names = self.store.variables()
                break
            except EndOfStreamError:
                self.ended = True
                return None
            except StepTimeoutError:
                if stopped():
                    return None
                waited += POLL_SLICE_S
                if waited >= self.timeout_s:
                    raise StepTimeoutError(f"no step arrived on ADIOS2 {self.store.options.engine} "
                                           f"{self.store.options.path!r} within {self.timeout_s} s") from None
        step = self.store.current_step
        chosen = {}
        for name in names:
            key = key_of(name, step)
            if key is None:
                continue
            try:
                chosen[key] = self.store.get_tensor(name)
            except BadArgumentError as exc:  # a local array or a string variable: not a tensor
                self.skipped[name] = str(exc)
        return step, chosen

    def release(self) -> None:
        """End the step :meth:`next_step` opened."""
        self.store.flush()

    def close(self) -> None:
        self.store.close()
