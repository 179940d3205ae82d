"""The server's side of a client job: its link, goodbyes, accepting and disconnecting."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..bootstrap import PURPOSE_STOP, Link, release, setup_client_side, setup_server_side
from ..mpienv import mpi


@dataclass
class ClientLink:
    """One client job as a server rank sees it."""

    link: Link
    mode: str  # "mpmd", "connect" or "spawn"
    byes: set[int] = field(default_factory=set)

    @property
    def comm(self) -> Any:
        return self.link.inter

    @property
    def nclients(self) -> int:
        return self.link.inter.Get_remote_size()

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
        out.append(ClientLink(link, "connect"))


def stop_accepting(accept_comm: Any, port: str) -> None:
    """Wake every server's accept thread with a stop connection from server rank 0."""
    MPI = mpi()
    if accept_comm.Get_rank() == 0:
        inter = MPI.COMM_SELF.Connect(port, MPI.INFO_NULL, 0)
        setup_client_side(inter, PURPOSE_STOP)
        inter.Disconnect()
