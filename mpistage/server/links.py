"""The server's side of its links: one :class:`ServerLink` per client job (and one for the other
server ranks), the per-source state of requests whose payload is still arriving, the bound on
one-sided window memory, and the accept thread that takes in connecting jobs."""

from __future__ import annotations

import collections
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._mpi.links import Link, LinkKind, hear_hello, release, setup_server_side
from ..mpienv import mpi
from ..protocol import JOIN_TAG, PURPOSE_STOP, RMA_MIN_BYTES, WIDEN_TAG
from .handlers import Request

JOIN_POLL_SECONDS = 0.002  # how often shards other than 0 look for a joining job
ACCEPT_RETRY_SECONDS = 0.1  # after a failed connect attempt, before accepting the next one
DEFAULT_WINDOW_CAP = 1 << 30


class WindowBudget:
    """The one-sided window memory of one shard, over all its links, bounded by ``cap`` bytes
    (``mpistage-server --window-cap``). A connecting job gets ``wanted`` bytes per client rank
    (``--rma-slot``), or less so that the total stays under the cap; a slot smaller than
    ``RMA_MIN_BYTES`` is no slot (the link has no window and payloads go point-to-point).
    Thread-safe: the accept thread takes, the release threads give back."""

    def __init__(self, cap: int = DEFAULT_WINDOW_CAP) -> None:
        self.cap = cap
        self.used = 0
        self._lock = threading.Lock()

    def slot_for(self, nranks: int, wanted: int) -> int:
        """The slot per rank a job of ``nranks`` ranks would get now."""
        with self._lock:
            fits = (self.cap - self.used) // max(nranks, 1)
        slot = min(wanted, max(fits, 0))
        return slot if slot >= RMA_MIN_BYTES else 0

    def take(self, nbytes: int) -> None:
        with self._lock:
            self.used += nbytes

    def give_back(self, nbytes: int) -> None:
        with self._lock:
            self.used -= nbytes


@dataclass(slots=True)
class PendingPayload:
    """A request whose point-to-point payload has not fully arrived: it waits here, per source,
    while the loop serves everyone else, until its parts are in or its deadline passes."""

    request: Request
    nbytes: int
    deadline: float
    got: int = 0


@dataclass(eq=False)
class ServerLink:
    """One client job as a server rank sees it; or, with kind PEER and no ``link``, the other
    server ranks (engine traffic uses the same requests over a server communicator)."""

    comm: Any
    kind: LinkKind
    link: Link | None = None
    budget: WindowBudget | None = None
    byes: set[int] = field(default_factory=set)
    #: per source rank: the request waiting for its payload, and requests that came after it
    waiting: dict[int, PendingPayload] = field(default_factory=dict)
    backlog: dict[int, collections.deque[np.ndarray]] = field(default_factory=dict)
    _memory: np.ndarray | None = None

    @classmethod
    def of(cls, link: Link, budget: WindowBudget | None = None) -> ServerLink:
        return cls(link.inter, link.kind, link, budget)

    @property
    def nclients(self) -> int:
        return self.comm.Get_remote_size() if self.link else self.comm.Get_size()

    @property
    def slot_bytes(self) -> int:
        """Bytes of window per client rank (0: this link has no window)."""
        return self.link.slot_bytes if self.link else 0

    @property
    def window_bytes(self) -> int:
        """This shard's window memory for the link, as MPI allocated it."""
        if self.link is None or not self.link.slot_bytes:
            return 0
        return len(self.link.window.tomemory())

    def goodbye(self, rank: int) -> bool:
        """Record that client ``rank`` is done; True once every rank of the job is."""
        self.byes.add(rank)
        return len(self.byes) == self.nclients

    def slot(self, rank: int) -> np.ndarray:
        """Client ``rank``'s part of this shard's one-sided window, as bytes."""
        if self._memory is None:
            self._memory = np.frombuffer(self.link.window.tomemory(), np.uint8)
        size = self.link.slot_bytes
        return self._memory[rank * size:(rank + 1) * size]

    def report(self) -> dict[str, Any]:
        """What INFO shows about this link."""
        return {"kind": self.kind.value, "ranks": self.nclients, "slot_bytes": self.slot_bytes,
                "window_bytes": self.window_bytes, "waiting_payloads": len(self.waiting)}

    def free(self) -> None:
        """Release the link (collective with its job); its window goes back to the budget."""
        if self.link is not None:
            nbytes = self.window_bytes
            self._memory = None
            release(self.link)
            if self.budget is not None:
                self.budget.give_back(nbytes)


def accept_links(shard_comm: Any, port: str | None, slot_bytes: int, budget: WindowBudget,
                 out: collections.deque[ServerLink]) -> None:
    """Thread body: take in client jobs until a stop hello (docs/protocol.md, "connect").

    Shard 0 accepts on its port with ``MPI_COMM_SELF`` (waiting there costs no CPU), hears the
    hello and tells the other shards (``JOIN_TAG`` on ``shard_comm``); they poll for that
    message, sleeping in between. Then all shards and the job widen the link together, agree on
    the slot (the smallest any shard's window budget allows) and set up the session. An attempt
    that raises is reported on stderr and the thread goes on accepting."""
    while True:
        try:
            link = _accept_one(shard_comm, port, slot_bytes, budget)
        except Exception:  # one bad connect must not stop later jobs from connecting
            print(f"mpistage-server shard {shard_comm.Get_rank()}: a connect attempt failed:",
                  file=sys.stderr, flush=True)
            traceback.print_exc()
            time.sleep(ACCEPT_RETRY_SECONDS)
            continue
        if link is None:
            return
        out.append(link)


def _accept_one(shard_comm: Any, port: str | None, slot_bytes: int, budget: WindowBudget) -> ServerLink | None:
    """One connecting job as a new link; None for the stop hello."""
    MPI = mpi()
    shard, nshards = shard_comm.Get_rank(), shard_comm.Get_size()
    purpose = np.zeros(1, np.int32)
    bridge = None
    if shard == 0:
        first = MPI.COMM_SELF.Accept(port, MPI.INFO_NULL, 0)
        purpose[0] = hear_hello(first)
        for other in range(1, nshards):
            shard_comm.Send(purpose, other, JOIN_TAG)
        if purpose[0] == PURPOSE_STOP:
            first.Disconnect()
            return None
        bridge = first.Merge(False)
        first.Free()
    else:
        while not shard_comm.Iprobe(0, JOIN_TAG):
            time.sleep(JOIN_POLL_SECONDS)
        shard_comm.Recv(purpose, 0, JOIN_TAG)
        if purpose[0] == PURPOSE_STOP:
            return None
    inter = shard_comm.Create_intercomm(0, bridge if bridge is not None else MPI.COMM_SELF, 1, WIDEN_TAG)
    if bridge is not None:
        bridge.Free()
    slot = shard_comm.allreduce(budget.slot_for(inter.Get_remote_size(), slot_bytes), op=MPI.MIN)
    link = ServerLink.of(setup_server_side(inter, LinkKind.CONNECT, slot), budget)
    budget.take(link.window_bytes)
    return link
