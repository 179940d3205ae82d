"""What a server rank holds per client rank while that rank's messages are arriving: a request
header still being received, a request whose payload parts are arriving on its payload tag, or
the payload of a refused request being thrown away; and the sink that throws bytes away without
allocating them. No policy here: the progress loop (``loop.py``) decides what each message is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..mpienv import mpi
from .handlers import Request

SINK_BLOCK_BYTES = 1 << 20  # a discarded message lands, block after block, in this much memory


@dataclass(slots=True)
class IncomingHeader:
    """A request header whose receive did not complete at once (a large header, or a sender that
    stalled or died while sending it)."""

    buf: np.ndarray
    receive: Any  # MPI.Request
    deadline: float


@dataclass(slots=True)
class Incoming:
    """A request whose point-to-point payload arrives on ``tag``: each message lands in the next
    bytes of ``parts`` (one buffer per part, as admitted). With ``request`` None the request was
    refused (and answered) and its payload is received into the sink and dropped."""

    request: Request | None
    tag: int
    parts: list[np.ndarray]
    left: int  # announced bytes not yet matched to a message
    deadline: float
    part: int = 0
    offset: int = 0
    receives: list[Any] = field(default_factory=list)  # MPI requests in progress

    def place(self, nbytes: int) -> np.ndarray | None:
        """Where the next message of ``nbytes`` goes: the next bytes of the current part; None when
        it is more than announced or would cross into the next part."""
        if self.request is None or nbytes > self.left or self.part >= len(self.parts):
            return None
        target = self.parts[self.part]
        if self.offset + nbytes > target.nbytes:
            return None
        view = target[self.offset:self.offset + nbytes]
        self.offset += nbytes
        self.left -= nbytes
        if self.offset == target.nbytes:
            self.part, self.offset = self.part + 1, 0
        return view

    def abandon(self) -> None:
        """Stop expecting the rest of the payload (its request has been answered)."""
        self.request, self.left = None, 0

    def received(self) -> bool:
        """True when every message matched so far has been received."""
        if self.receives and mpi().Request.Testall(self.receives):
            self.receives.clear()
        return not self.receives


class Sink:
    """Receives any matched message into one reused block of memory (a datatype of one block whose
    extent is 0, repeated: every block lands on the same bytes), so a refused or stray payload of
    any size costs ``SINK_BLOCK_BYTES`` and no allocation."""

    def __init__(self) -> None:
        MPI = mpi()
        block = MPI.BYTE.Create_contiguous(SINK_BLOCK_BYTES)
        self._type = block.Create_resized(0, 0)
        self._type.Commit()
        block.Free()
        self._scratch = np.empty(SINK_BLOCK_BYTES, np.uint8)
        self.discarded_messages = 0
        self.discarded_bytes = 0

    def receive(self, msg: Any, nbytes: int) -> Any:
        """Start receiving the matched message ``msg`` of ``nbytes`` into the sink; the request."""
        self.discarded_messages += 1
        self.discarded_bytes += nbytes
        count = max(1, -(-nbytes // SINK_BLOCK_BYTES))
        return msg.Irecv([self._scratch, count, self._type])
