"""What both sides hold once a client job and the servers have found each other, and the
session setup that produces it (docs/protocol.md, "Session setup").

Every way of finding each other (:class:`LinkKind`) ends in an intercommunicator whose remote
rank ``i`` is shard ``i`` (seen from a client), or whose remote group is one client job (seen
from a server). What a kind implies (disconnect at goodbye, a one-sided window) follows from
the kind.
"""

from __future__ import annotations

import enum
import os
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..mpienv import mpi
from ..protocol import HELLO_MAX_BYTES, HELLO_TAG, INTERCOMM_TAG, PROTOCOL_VERSION, PURPOSE_CLIENT, RMA_MIN_BYTES

VERDICT_SECONDS = 60.0  # how long a connecting job waits for shard 0's answer to its hello
HELLO_POLL_SECONDS = 0.002  # between tests of a hello or verdict that has not arrived
ADMITTED = 0  # the verdict that admits a job; any other value refuses it (docs/protocol.md)


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


@dataclass(frozen=True)
class ConnectHello:
    """What a connecting job's rank 0 tells shard 0 (connect mode): ``<i4 version, <i4 purpose``,
    then the deployment secret as ASCII; at most ``HELLO_MAX_BYTES`` bytes in all. When every rank
    of the job runs on one host, the secret is followed by a NUL byte, that host's name (ASCII), a
    NUL byte and each rank's process id (``<i4``, in rank order): the servers on that host watch
    those processes (an idle job that vanished is let go; docs/security.md). Without that part
    (several hosts, too many ranks for the message) nobody watches the job's processes."""

    version: int
    purpose: int
    secret: bytes
    host: str = ""
    pids: tuple[int, ...] = ()

    def pack(self) -> bytes:
        head = struct.pack("<ii", self.version, self.purpose) + self.secret
        if not self.host or not self.pids:
            return head
        tail = b"\0" + self.host.encode("ascii") + b"\0" + struct.pack(f"<{len(self.pids)}i", *self.pids)
        return head + tail if len(head) + len(tail) <= HELLO_MAX_BYTES else head

    @classmethod
    def unpack(cls, raw: bytes) -> ConnectHello:
        """Parse a hello; raises ValueError when it is too short or too long, or its process list
        is not whole ``<i4`` values."""
        if not 8 <= len(raw) <= HELLO_MAX_BYTES:
            raise ValueError(f"a connect hello of {len(raw)} bytes (8..{HELLO_MAX_BYTES} expected)")
        version, purpose = struct.unpack_from("<ii", raw)
        secret, sep, rest = bytes(raw[8:]).partition(b"\0")
        if not sep:
            return cls(version, purpose, secret)
        host, sep, pids = rest.partition(b"\0")
        if not sep or not host or not pids or len(pids) % 4:
            raise ValueError("a connect hello whose process list is malformed")
        return cls(version, purpose, secret, host.decode("ascii", errors="replace"),
                   struct.unpack(f"<{len(pids) // 4}i", pids))


def job_processes(comm: Any) -> tuple[str, tuple[int, ...]]:
    """Collective over ``comm``: ``(host, pids)`` of its ranks, in rank order, when they all run
    on one host; ``("", ())`` otherwise (every rank gets the answer)."""
    ranks = comm.allgather((socket.gethostname(), os.getpid()))
    hosts = {host for host, _pid in ranks}
    return (ranks[0][0], tuple(pid for _host, pid in ranks)) if len(hosts) == 1 else ("", ())


def pack_verdict(code: int, reason: str) -> bytes:
    """Shard 0's answer to a connect hello: ``<i4 code`` (:data:`ADMITTED` or not), UTF-8 reason."""
    return struct.pack("<i", code) + reason.encode()[:HELLO_MAX_BYTES - 4]


def wait_for(request: Any, seconds: float, status: Any = None) -> bool:
    """Test ``request`` until it completes (True; ``status`` filled in) or ``seconds`` pass
    (False), sleeping in between."""
    deadline = time.monotonic() + seconds
    while not request.Test(status):
        if time.monotonic() > deadline:
            return False
        time.sleep(HELLO_POLL_SECONDS)
    return True


def unpack_verdict(raw: bytes) -> tuple[int, str]:
    """``(code, reason)`` of a verdict; a verdict too short to read is a refusal."""
    if len(raw) < 4:
        return ADMITTED + 1, "an unreadable verdict"
    return struct.unpack_from("<i", raw)[0], raw[4:].decode(errors="replace")


def say_connect_hello(first: Any, comm: Any, purpose: int, secret: str,
                      seconds: float = VERDICT_SECONDS) -> tuple[int, str]:
    """Collective over ``comm`` (the connecting job): rank 0 sends its hello (with the job's
    processes, :func:`job_processes`) to shard 0 on ``first`` and waits, at most ``seconds``, for
    the verdict, which every rank gets back as ``(code, reason)``. A verdict that does not come is
    a refusal."""
    MPI = mpi()
    host, pids = job_processes(comm)
    shared = np.zeros(4 + HELLO_MAX_BYTES, np.uint8)  # <i4 length, then the verdict as received
    if comm.Get_rank() == 0:
        first.Send(ConnectHello(PROTOCOL_VERSION, purpose, secret.encode(), host, pids).pack(), 0, HELLO_TAG)
        buf = np.zeros(HELLO_MAX_BYTES, np.uint8)
        status = MPI.Status()
        request = first.Irecv(buf, 0, HELLO_TAG)
        if wait_for(request, seconds, status):
            raw = buf[:status.Get_count(MPI.BYTE)].tobytes()
        else:
            request.Cancel()
            request.Wait()
            raw = pack_verdict(ADMITTED + 1, f"shard 0 did not answer the hello within {seconds} s")
        shared[:4] = np.frombuffer(struct.pack("<i", len(raw)), np.uint8)
        shared[4:4 + len(raw)] = np.frombuffer(raw, np.uint8)
    comm.Bcast(shared, 0)
    length = struct.unpack_from("<i", shared[:4].tobytes())[0]
    return unpack_verdict(shared[4:4 + length].tobytes())


def setup_client_side(inter: Any, kind: LinkKind) -> Link:
    """Merged communicator and window, collective over the client group and the servers
    (docs/protocol.md, "Session setup"); the hello has been said."""
    MPI = mpi()
    merged = inter.Merge(True)
    slot = np.zeros(1, np.int64)
    merged.Bcast(slot, 0)
    window = MPI.Win.Allocate(0, 1, MPI.INFO_NULL, merged) if slot[0] else None
    return Link(kind, inter, merged, window, int(slot[0]))


def setup_server_side(inter: Any, kind: LinkKind, slot_bytes: int) -> Link:
    """The servers' half of :func:`setup_client_side`: ``slot_bytes`` of window per client rank
    on links that cross jobs, none otherwise, and none when ``slot_bytes`` is under
    ``RMA_MIN_BYTES`` (no payload would go one-sided). Every shard must pass the same value."""
    MPI = mpi()
    slot_bytes = slot_bytes if kind.crosses_jobs and slot_bytes >= RMA_MIN_BYTES else 0
    merged = inter.Merge(False)
    merged.Bcast(np.array([slot_bytes], np.int64), 0)
    window = MPI.Win.Allocate(slot_bytes * inter.Get_remote_size(), 1, MPI.INFO_NULL, merged) if slot_bytes else None
    return Link(kind, inter, merged, window, slot_bytes)


def release(link: Link) -> None:
    """Free the window and merged communicator, then disconnect the intercommunicator (links
    that cross jobs) or free it."""
    if link.window is not None:
        link.window.Free()
    link.merged.Free()
    if link.kind.crosses_jobs:
        link.inter.Disconnect()
    else:
        link.inter.Free()
