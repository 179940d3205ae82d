"""The server's side of a client job: its link, goodbyes, accepting and disconnecting."""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._mpi.links import Link, LinkKind, hear_hello, release, setup_server_side
from ..mpienv import mpi
from ..protocol import JOIN_TAG, PURPOSE_STOP, WIDEN_TAG

JOIN_POLL_SECONDS = 0.002  # how often shards other than 0 look for a joining job


@dataclass
class ClientLink:
    """One client job as a server rank sees it; or, with kind PEER and no ``link``, the other
    server ranks (engine traffic uses the same requests over a server communicator)."""

    comm: Any
    kind: LinkKind
    link: Link | None = None
    byes: set[int] = field(default_factory=set)

    @classmethod
    def of(cls, link: Link) -> ClientLink:
        return cls(link.inter, link.kind, link)

    @property
    def nclients(self) -> int:
        return self.comm.Get_remote_size() if self.link else self.comm.Get_size()

    @property
    def slot_bytes(self) -> int:
        return self.link.slot_bytes if self.link else 0

    def goodbye(self, rank: int) -> bool:
        """Record that client ``rank`` is done; True once every rank of the job is."""
        self.byes.add(rank)
        return len(self.byes) == self.nclients

    def slot(self, rank: int) -> np.ndarray:
        """Client ``rank``'s part of this shard's one-sided window, as bytes."""
        size = self.link.slot_bytes
        memory = np.frombuffer(self.link.window.tomemory(), np.uint8)
        return memory[rank * size:(rank + 1) * size]

    def free(self) -> None:
        if self.link is not None:
            release(self.link)


def accept_links(shard_comm: Any, port: str | None, slot_bytes: int,
                 out: collections.deque[ClientLink]) -> None:
    """Thread body: take in client jobs until a stop hello (docs/protocol.md, "connect").

    Shard 0 accepts on its port with ``MPI_COMM_SELF`` (waiting there costs no CPU), hears the
    hello and tells the other shards (``JOIN_TAG`` on ``shard_comm``); they poll for that
    message, sleeping in between. Then all shards and the job widen the link together."""
    MPI = mpi()
    shard, nshards = shard_comm.Get_rank(), shard_comm.Get_size()
    purpose_buf = np.zeros(1, np.int32)
    while True:
        bridge = None
        if shard == 0:
            first = MPI.COMM_SELF.Accept(port, MPI.INFO_NULL, 0)
            purpose_buf[0] = hear_hello(first)
            for other in range(1, nshards):
                shard_comm.Send(purpose_buf, other, JOIN_TAG)
            if purpose_buf[0] == PURPOSE_STOP:
                first.Disconnect()
                return
            bridge = first.Merge(False)
            first.Free()
        else:
            while not shard_comm.Iprobe(0, JOIN_TAG):
                time.sleep(JOIN_POLL_SECONDS)
            shard_comm.Recv(purpose_buf, 0, JOIN_TAG)
            if purpose_buf[0] == PURPOSE_STOP:
                return
        inter = shard_comm.Create_intercomm(0, bridge if bridge is not None else MPI.COMM_SELF, 1, WIDEN_TAG)
        if bridge is not None:
            bridge.Free()
        out.append(ClientLink.of(setup_server_side(inter, LinkKind.CONNECT, slot_bytes)))
