"""What both sides hold once a client job and the servers have found each other, and the
session setup that produces it (docs/protocol.md, "Session setup").

Every way of finding each other (:class:`LinkKind`) ends in an intercommunicator whose remote
rank ``i`` is shard ``i`` (seen from a client), or whose remote group is one client job (seen
from a server). What a kind implies (disconnect at goodbye, a one-sided window) follows from
the kind.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..mpienv import mpi
from ..protocol import INTERCOMM_TAG, PROTOCOL_VERSION, PURPOSE_CLIENT, RMA_MIN_BYTES


class LinkKind(enum.Enum):
    """How a client job and the servers found each other."""

    MPMD = "mpmd"  # one MPI_COMM_WORLD split by role
    CONNECT = "connect"  # a separately started job, MPI_Comm_connect to the servers' port
    SPAWN = "spawn"  # a job started with MPI_Comm_spawn (ensemble members)
    PEER = "peer"  # the other server ranks (engine traffic between shards)

    @property
    def crosses_jobs(self) -> bool:
        """Links between separately started jobs are disconnected at goodbye (MPI_Comm_disconnect)
        and are the only ones with a one-sided window: within one world point-to-point is as fast
        (docs/performance.md)."""
        return self in (LinkKind.CONNECT, LinkKind.SPAWN)


@dataclass
class Link:
    """The intercommunicator, its merged intracommunicator and the one-sided window (servers
    expose ``slot_bytes`` per client rank, clients expose 0; ``slot_bytes`` is 0 when the link
    has no usable window)."""

    kind: LinkKind
    inter: Any
    merged: Any
    window: Any
    slot_bytes: int


@dataclass
class WorldSplit:
    """The result of splitting ``MPI_COMM_WORLD`` by role in an MPMD job."""

    local: Any  # the intracommunicator of this rank's role
    remote: Any | None  # intercommunicator to the other role (None when it has no ranks)


def split_world(role: int) -> WorldSplit:
    """Collective over ``MPI_COMM_WORLD``: every rank, server or application, calls it once."""
    MPI = mpi()
    world = MPI.COMM_WORLD
    local = world.Split(role, world.Get_rank())
    roles = np.empty(world.Get_size(), dtype=np.int32)
    world.Allgather(np.array([role], dtype=np.int32), roles)
    other = [r for r, x in enumerate(roles) if x != role]
    remote = local.Create_intercomm(0, world, other[0], INTERCOMM_TAG) if other else None
    return WorldSplit(local, remote)


def is_mpmd_app() -> bool:
    """True in the application part of an MPMD launch (its ``MPI_APPNUM`` is 1 or more)."""
    MPI = mpi()
    appnum = MPI.COMM_WORLD.Get_attr(MPI.APPNUM)
    return appnum is not None and appnum >= 1


def say_hello(inter: Any, purpose: int = PURPOSE_CLIENT) -> None:
    """The client group's hello: ``int32[2] = {protocol version, purpose}`` from its rank 0."""
    MPI = mpi()
    root = MPI.ROOT if inter.Get_rank() == 0 else MPI.PROC_NULL
    inter.Bcast(np.array([PROTOCOL_VERSION, purpose], np.int32), root)


def hear_hello(inter: Any) -> int:
    """The servers' side of :func:`say_hello`; returns the purpose."""
    hello = np.zeros(2, np.int32)
    inter.Bcast(hello, 0)
    return int(hello[1])


def setup_client_side(inter: Any, kind: LinkKind) -> Link:
    """Merged communicator and window, collective over the client group and the servers
    (docs/protocol.md, "Session setup"); the hello has been said."""
    MPI = mpi()
    merged = inter.Merge(True)
    slot = np.zeros(1, np.int64)
    merged.Bcast(slot, 0)
    window = MPI.Win.Allocate(0, 1, MPI.INFO_NULL, merged)
    return Link(kind, inter, merged, window, int(slot[0]))


def setup_server_side(inter: Any, kind: LinkKind, slot_bytes: int) -> Link:
    """The servers' half of :func:`setup_client_side`: ``slot_bytes`` of window per client rank
    on links that cross jobs, none otherwise, and none when ``slot_bytes`` is under
    ``RMA_MIN_BYTES`` (no payload would go one-sided). Every shard must pass the same value."""
    MPI = mpi()
    slot_bytes = slot_bytes if kind.crosses_jobs and slot_bytes >= RMA_MIN_BYTES else 0
    merged = inter.Merge(False)
    merged.Bcast(np.array([slot_bytes], np.int64), 0)
    window = MPI.Win.Allocate(slot_bytes * inter.Get_remote_size(), 1, MPI.INFO_NULL, merged)
    return Link(kind, inter, merged, window, slot_bytes)


def release(link: Link) -> None:
    """Free the window and merged communicator, then disconnect the intercommunicator (links
    that cross jobs) or free it."""
    link.window.Free()
    link.merged.Free()
    if link.kind.crosses_jobs:
        link.inter.Disconnect()
    else:
        link.inter.Free()
