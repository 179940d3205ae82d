"""The server's side of its links: one :class:`ServerLink` per client job (and one for the other
server ranks), the per-source state of requests whose payload is still arriving, the bound on
one-sided window memory, and the accept thread that takes in connecting jobs."""

from __future__ import annotations

import collections
import hmac
import os
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._mpi.connfile import SECRET_ENV
from .._mpi.links import ADMITTED, ConnectHello, Link, LinkKind, pack_verdict, release, setup_server_side, wait_for
from ..mpienv import mpi
from ..protocol import (
    HELLO_MAX_BYTES,
    HELLO_TAG,
    JOIN_TAG,
    PROTOCOL_VERSION,
    PURPOSE_CLIENT,
    PURPOSE_REARM,
    PURPOSE_STOP,
    RMA_MIN_BYTES,
    WIDEN_TAG,
)
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
    #: the job's processes this shard watches (same host, alive when the job was admitted); empty: none
    pids: tuple[int, ...] = ()
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
                "window_bytes": self.window_bytes, "waiting_payloads": len(self.waiting),
                "watched_pids": len(self.pids)}

    def watch(self, host: str, pids: tuple[int, ...]) -> None:
        """Watch the job's processes ``pids`` (from its hello) if they run on this host: only when
        the name is this host's, there is one per rank, and every one is alive now (the job is in
        its session setup): a process list from another host, or from another process namespace
        behind the same host name, is never watched, so a live job is not taken for a dead one."""
        if (host and host == socket.gethostname() and len(pids) == self.nclients
                and all(pid > 0 for pid in pids) and all(map(process_alive, pids))):
            self.pids = pids

    def vanished(self) -> bool:
        """True when the link's job is watched and none of its processes is alive any more."""
        return bool(self.pids) and not any(map(process_alive, self.pids))

    def abandon(self) -> None:
        """Stop using the link without any MPI call (its job is gone or stalled: freeing the window
        and disconnecting are collective with it and would block for good). Its MPI handles stay
        referenced, never freed; its window memory stays allocated and counted in the budget."""
        if self.link is not None:
            _ABANDONED.append(self.link)
            self._memory = None

    def free(self) -> None:
        """Release the link (collective with its job); its window goes back to the budget."""
        if self.link is not None:
            nbytes = self.window_bytes
            self._memory = None
            release(self.link)
            if self.budget is not None:
                self.budget.give_back(nbytes)


def process_alive(pid: int) -> bool:
    """True while process ``pid`` of this host exists and is not a zombie (no signal is sent)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:  # no /proc here: existing is all we know
        return True
    return stat.rpartition(b")")[2].split()[:1] != [b"Z"]


#: Set by the servers' own shutdown path (:func:`mpistage.server.wake.wake_accept_threads`) just
#: before it connects to end the accept thread: a stop hello is admitted only then, and only with
#: the secret. A client can never stop the servers through the accept path (docs/security.md).
STOP_ALLOWED = threading.Event()
#: Session setups abandoned because they did not finish (a job that died or stalled mid-setup):
#: their threads stay blocked in MPI for good, so this process must not call ``MPI_Finalize``.
STUCK_SETUPS: list[threading.Thread] = []
#: MPI handles of abandoned links: freeing them is collective with a job that is gone, so they are
#: kept referenced and never freed.
_ABANDONED: list[Any] = []

VERDICT_SEND_SECONDS = 5.0  # how long shard 0 drives the send of its verdict
#: How long a connected job has for its hello, and then for session setup (widen, merge, window),
#: before it is let go or the setup abandoned (``mpistage-server --setup-timeout``).
SETUP_SECONDS = {"value": 30.0}
CTL_JOIN, CTL_STOP = 0, 1  # shard 0 -> other shards on JOIN_TAG: a job joins / stop accepting
CTL_FAILED, CTL_SET_UP = 0, 1  # every shard's outcome of a setup, and shard 0's decision (keep or not)


def accept_links(shard_comm: Any, port: str | None, slot_bytes: int, budget: WindowBudget,
                 out: collections.deque[ServerLink]) -> None:
    """Thread body: take in client jobs until the servers' own stop hello (docs/protocol.md,
    "connect"); see :class:`Acceptor`. Shard 0 reads the deployment secret from
    ``$MPISTAGE_SECRET`` (``connfile.deployment_secret`` put it there)."""
    Acceptor(shard_comm, port, slot_bytes, budget, out, os.environ.get(SECRET_ENV, "")).run()


class Acceptor:
    """The accept thread of one shard.

    Shard 0 accepts on its port with ``MPI_COMM_SELF`` (waiting there costs no CPU) and screens
    the job's hello: it must come within ``SETUP_SECONDS``, carry this protocol's version and the
    deployment secret, and not ask to stop (unless :data:`STOP_ALLOWED`). A refused job gets a
    verdict saying why, is logged on stderr and let go; nothing else happens. An admitted job is
    announced to the other shards (``JOIN_TAG`` on ``shard_comm``; they poll, sleeping in between),
    and all shards and the job widen the link, agree on the window slot and set up the session on
    a fresh communicator of the shards (``attempt``), on a helper thread bounded by
    ``SETUP_SECONDS``. The shards then agree: the link is kept only when every shard set it up.
    Otherwise (a job killed or stalled mid-setup; its MPI calls never return) the attempt is
    abandoned: its link and communicator are never used again, the next job gets a new
    communicator, and accepting goes on."""

    def __init__(self, shard_comm: Any, port: str | None, slot_bytes: int, budget: WindowBudget,
                 out: collections.deque[ServerLink], secret: str) -> None:
        self.MPI = mpi()
        self.ctl = shard_comm
        self.shard, self.nshards = shard_comm.Get_rank(), shard_comm.Get_size()
        if self.shard == 0 and not secret:
            raise ValueError(f"no deployment secret in ${SECRET_ENV}")
        self.port, self.slot_bytes, self.budget, self.out = port, slot_bytes, budget, out
        self.secret = secret.encode()
        self.attempt = shard_comm.Dup()
        self.first: Any = None
        self.job = ConnectHello(0, 0, b"")  # the joining job's processes (its hello's host and pids)
        self._stale: list[Any] = []  # verdict sends that had not completed

    def log(self, text: str) -> None:
        print(f"mpistage-server shard {self.shard}: {text}", file=sys.stderr, flush=True)

    def run(self) -> None:
        while True:
            try:
                word = self._next_job() if self.shard == 0 else self._ctl_recv(0)
                if word == CTL_STOP:
                    return
                if self.shard != 0:
                    self.job = ConnectHello.unpack(self._ctl_recv_bytes(0))
                link = self._set_up()
                if self._agree(link is not None):
                    self.out.append(link)
                    continue
                if link is not None:
                    link.abandon()
                self.log("a connecting job's session setup was abandoned; accepting goes on")
                self.attempt = self.ctl.Dup()
            except Exception:  # one bad connect must not stop later jobs from connecting
                self.log("a connect attempt failed:")
                traceback.print_exc()
                time.sleep(ACCEPT_RETRY_SECONDS)

    # ------------------------------------------------------------ shard 0: accept and screen
    def _next_job(self) -> int:
        """Accept until a job is admitted; tell the other shards; CTL_JOIN or CTL_STOP."""
        MPI = self.MPI
        while True:
            first = MPI.COMM_SELF.Accept(self.port, MPI.INFO_NULL, 0)
            first.Set_errhandler(MPI.ERRORS_RETURN)
            hello = self._hear(first)
            if hello is not None and hello.purpose == PURPOSE_REARM and hmac.compare_digest(hello.secret, self.secret):
                self._answer(first, ADMITTED, "re-armed")  # the servers' own keep-alive: Accept again
                first.Free()
                continue
            refusal = f"no hello within {SETUP_SECONDS['value']} s" if hello is None else self._refusal(hello)
            if hello is not None:
                self._answer(first, ADMITTED if refusal is None else ADMITTED + 1, refusal or "admitted")
            if refusal is None:
                word = CTL_STOP if hello.purpose == PURPOSE_STOP else CTL_JOIN
                job = ConnectHello(0, 0, b"", hello.host, hello.pids)
                for other in range(1, self.nshards):
                    self.ctl.Send(np.array([word], np.int32), other, JOIN_TAG)
                    if word == CTL_JOIN:
                        self.ctl.Send(np.frombuffer(job.pack(), np.uint8), other, JOIN_TAG)
                if word == CTL_STOP:
                    first.Free()
                else:
                    self.first, self.job = first, job
                return word
            self.log(f"refused a connecting job: {refusal}")
            first.Free()  # not Disconnect: collective with a job that may be gone or hostile

    def _hear(self, first: Any) -> ConnectHello | None:
        """The hello from the job's rank 0, or None when none came in time or it is unreadable."""
        MPI, status = self.MPI, self.MPI.Status()
        deadline = time.monotonic() + SETUP_SECONDS["value"]
        while (msg := first.Improbe(0, HELLO_TAG, status)) is None:
            if time.monotonic() > deadline:
                return None
            time.sleep(JOIN_POLL_SECONDS)
        buf = np.zeros(HELLO_MAX_BYTES, np.uint8)
        try:
            msg.Recv(buf, status)  # longer than HELLO_MAX_BYTES: MPI_ERR_TRUNCATE
            return ConnectHello.unpack(buf[:status.Get_count(MPI.BYTE)].tobytes())
        except (MPI.Exception, ValueError) as exc:
            self.log(f"an unreadable hello: {exc}")
            return ConnectHello(-1, -1, b"")

    def _refusal(self, hello: ConnectHello) -> str | None:
        """Why ``hello`` is refused; None when it is admitted. The secret is checked first."""
        if not hmac.compare_digest(hello.secret, self.secret):
            return "wrong or missing secret"
        if hello.version != PROTOCOL_VERSION:
            return f"protocol {hello.version}, the servers speak {PROTOCOL_VERSION}"
        if hello.purpose == PURPOSE_STOP:
            return None if STOP_ALLOWED.is_set() else "a stop hello: the servers stop only through mpistage stop"
        if hello.purpose != PURPOSE_CLIENT:
            return f"unknown purpose {hello.purpose}"
        return None

    def _answer(self, first: Any, code: int, reason: str) -> None:
        request = first.Isend(pack_verdict(code, reason), 0, HELLO_TAG)
        if not wait_for(request, VERDICT_SEND_SECONDS):
            self._stale.append(request)  # a job that does not take its verdict: let it be

    # ------------------------------------------------------------ every shard
    def _ctl_recv(self, source: int) -> int:
        word = np.zeros(1, np.int32)
        while not self.ctl.Iprobe(source, JOIN_TAG):
            time.sleep(JOIN_POLL_SECONDS)
        self.ctl.Recv(word, source, JOIN_TAG)
        return int(word[0])

    def _ctl_recv_bytes(self, source: int) -> bytes:
        status = self.MPI.Status()
        while not self.ctl.Iprobe(source, JOIN_TAG, status):
            time.sleep(JOIN_POLL_SECONDS)
        buf = np.zeros(status.Get_count(self.MPI.BYTE), np.uint8)
        self.ctl.Recv(buf, source, JOIN_TAG)
        return buf.tobytes()

    def _set_up(self) -> ServerLink | None:
        """The job's session setup on a helper thread, bounded by ``SETUP_SECONDS``; None when it
        raised or did not finish (its thread is then left blocked, in :data:`STUCK_SETUPS`)."""
        first, self.first = self.first, None
        made: list[ServerLink] = []

        def work() -> None:
            try:
                made.append(self._widen(first))
            except Exception:
                self.log("session setup failed:")
                traceback.print_exc()

        t = threading.Thread(target=work, name="mpistage-setup", daemon=True)
        t.start()
        t.join(SETUP_SECONDS["value"])
        if t.is_alive():
            STUCK_SETUPS.append(t)
            self.log(f"session setup did not finish within {SETUP_SECONDS['value']} s "
                     "(a job died or stalled mid-setup)")
            return None
        if not made:
            return None
        self.budget.take(made[0].window_bytes)
        made[0].watch(self.job.host, self.job.pids)
        return made[0]

    def _widen(self, first: Any) -> ServerLink:
        MPI = self.MPI
        bridge = None
        if first is not None:
            bridge = first.Merge(False)
            first.Free()
        inter = self.attempt.Create_intercomm(0, bridge if bridge is not None else MPI.COMM_SELF, 1, WIDEN_TAG)
        if bridge is not None:
            bridge.Free()
        slot = self.attempt.allreduce(self.budget.slot_for(inter.Get_remote_size(), self.slot_bytes), op=MPI.MIN)
        return ServerLink.of(setup_server_side(inter, LinkKind.CONNECT, slot), self.budget)

    def _agree(self, ok: bool) -> bool:
        """True when every shard set the link up (shard 0 collects and decides)."""
        if self.shard != 0:
            self.ctl.Send(np.array([CTL_SET_UP if ok else CTL_FAILED], np.int32), 0, JOIN_TAG)
            return self._ctl_recv(0) == CTL_SET_UP
        keep = ok
        for other in range(1, self.nshards):
            keep = self._ctl_recv(other) == CTL_SET_UP and keep
        for other in range(1, self.nshards):
            self.ctl.Send(np.array([CTL_SET_UP if keep else CTL_FAILED], np.int32), other, JOIN_TAG)
        return keep
