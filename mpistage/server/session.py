"""The server's side of a client job: its link, goodbyes, accepting and disconnecting."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..bootstrap import Link, release, setup_server_side
from ..mpienv import mpi


@dataclass
class ClientLink:
    """One client job as a server rank sees it; or, with mode "peer" and no ``link``, the other
    server ranks (engine traffic uses the same requests over a server communicator)."""

    comm: Any
    mode: str  # "mpmd", "connect", "spawn" or "peer"
    link: Link | None = None
    byes: set[int] = field(default_factory=set)

    @classmethod
    def of(cls, link: Link, mode: str) -> ClientLink:
        return cls(link.inter, mode, link)

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
            release(self.link, disconnect=self.mode == "connect")


def accept_links(accept_comm: Any, port: str, slot_bytes: int,
                 out: collections.deque[ClientLink]) -> None:
    """Thread body: accept client jobs until a stop connection arrives (collective over servers)."""
    MPI = mpi()
    while True:
        inter = accept_comm.Accept(port, MPI.INFO_NULL, 0)
        link = setup_server_side(inter, slot_bytes)
        if link is None:
            inter.Disconnect()
            return
        out.append(ClientLink.of(link, "connect"))
