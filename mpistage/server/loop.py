"""The server rank's progress loop: polls every link, reads each request and its payload, hands
it to a handler, and sends exactly one reply. No client can stall it: a request whose payload
has not fully arrived waits in its sender's slot (per link and source) while the loop serves
everyone else, and gets an error reply once its deadline passes; small replies are eager sends
(they complete at once), large ones are driven for at most ``REPLY_PUSH_SECONDS`` and then
progressed between polls; a bad message gets an error reply. New jobs are accepted, and finished
ones released, on helper threads.
"""

from __future__ import annotations

import collections
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._mpi.framing import PayloadPath, payload_path
from .._mpi.links import LinkKind
from ..backoff import Backoff
from ..errors import MpistageError, ProtocolError, UnknownOperationError
from ..mpienv import mpi
from ..protocol import (
    FLAG_INLINE,
    FLAG_RMA,
    MAX_HEADER_BYTES,
    REPLY_MAGIC,
    REQUEST_MAGIC,
    SEQ_MAX,
    SEQ_MIN,
    TAG_PAYLOAD,
    TAG_REQUEST,
    Header,
    Op,
    Status,
    WireError,
    pack_message,
    unpack_message,
)
from .handlers import Handler, Reply, Request
from .links import PendingPayload, ServerLink, WindowBudget, accept_links
from .wake import wake_accept_threads

EAGER_BYTES = 4096  # replies this small go out with a blocking send, which completes at once
REPLY_PUSH_SECONDS = 0.005  # drive a reply's transfer this long before going back to polling
SPIN_SECONDS = 0.002  # after the last message, poll without sleeping this long
DRAIN_SECONDS = 5.0  # at the end, how long unfinished reply sends may take
RELEASE_JOIN_SECONDS = 10.0  # at the end, how long each link release may take
ACCEPT_JOIN_SECONDS = 30.0  # at the end, how long the accept thread may take to stop


@dataclass
class LoopStats:
    requests: int = 0
    errors: int = 0


class ProgressLoop:
    """One server rank's request loop over its links. ``alloc(nbytes)`` gives the buffers that
    payloads are received into (the store's allocator: they are what the store keeps)."""

    def __init__(self, shard: int, handlers: dict[int, Handler], payload_timeout: float = 10.0,
                 alloc: Callable[[int], np.ndarray] | None = None) -> None:
        self.MPI = mpi()
        self.BYTE, self.ANY_SOURCE = self.MPI.BYTE, self.MPI.ANY_SOURCE
        self.shard = shard
        self.handlers = handlers
        self.payload_timeout = payload_timeout
        self.alloc = alloc or (lambda n: np.empty(n, np.uint8))
        self.links: list[ServerLink] = []
        self._polled: tuple[ServerLink, ...] = ()
        self.new_links: collections.deque[ServerLink] = collections.deque()
        self.soon: collections.deque[Callable[[], None]] = collections.deque()
        self.pending_sends: list[tuple[Any, list[Any]]] = []
        self.stats = LoopStats()
        self.stopping = False
        self.stop_after_last_job = False
        self._threads: list[threading.Thread] = []
        self._accept_thread: threading.Thread | None = None
        self._status = self.MPI.Status()
        self._recv = np.empty(EAGER_BYTES, np.uint8)  # request headers land here (copied if kept)

    # ------------------------------------------------------------ links
    def add_link(self, link: ServerLink) -> None:
        self.links.append(link)
        self._polled = tuple(self.links)

    def start_accepting(self, accept_comm: Any, port: str | None, slot_bytes: int, budget: WindowBudget) -> None:
        """Take in client jobs in a background thread (shard 0 accepts on ``port``)."""
        t = threading.Thread(target=accept_links, args=(accept_comm, port, slot_bytes, budget, self.new_links),
                             name="mpistage-accept", daemon=True)
        t.start()
        self._accept_thread = t

    def _retire(self, link: ServerLink) -> None:
        """Every rank of the link's job said goodbye: release it on a helper thread, since the
        release is collective with that job and must not stall the other jobs."""
        self.links.remove(link)
        self._polled = tuple(self.links)
        self._threads = [t for t in self._threads if t.is_alive()]
        t = threading.Thread(target=link.free, name="mpistage-release", daemon=True)
        t.start()
        self._threads.append(t)
        if self.stop_after_last_job and all(lk.kind == LinkKind.PEER for lk in self.links):
            self.stopping = True

    def report(self) -> dict[str, Any]:
        """Requests, errors and links, for INFO."""
        return {"requests": self.stats.requests, "errors": self.stats.errors,
                "client_jobs": sum(link.kind != LinkKind.PEER for link in self.links),
                "links": [link.report() for link in self.links],
                "pending_sends": len(self.pending_sends), "release_threads": len(self._threads)}

    # ------------------------------------------------------------ replies
    def reply(self, req: Request, rep: Reply) -> None:
        """Send ``rep`` for ``req`` without blocking; safe only on the loop's thread. The payload
        takes the path :func:`~mpistage._mpi.framing.payload_path` chooses for what the request
        allows (inline, the client's window slot, or messages)."""
        link, flags, nbytes = req.link, 0, 0
        payload = rep.payload
        if payload:
            nbytes = sum(int(p.nbytes) for p in payload)
            rflags = req.header.flags
            path = payload_path(len(payload), nbytes, inline=bool(rflags & FLAG_INLINE),
                                slot_bytes=link.slot_bytes if rflags & FLAG_RMA else 0)
            if path is PayloadPath.INLINE:
                rep.fields = [*rep.fields, payload[0].tobytes()]
                payload = []
            elif path is PayloadPath.ONE_SIDED:
                link.slot(req.source)[:nbytes] = payload[0].reshape(-1).view(np.uint8)
                payload = []
            flags = path.flag
        head = pack_message(REPLY_MAGIC, rep.status, req.header.seq, rep.fields, nbytes, flags)
        if rep.status != Status.OK:
            self.stats.errors += 1
        comm = link.comm
        if not payload and len(head) <= EAGER_BYTES:
            comm.Send(head, req.source, req.header.seq)  # eager: completes at once
            return
        bufs: list[Any] = [np.frombuffer(head, np.uint8), *payload]
        reqs = [comm.Isend(b, req.source, req.header.seq) for b in bufs]
        # The client is waiting for exactly this: drive the transfer now, but never for long.
        deadline = time.monotonic() + REPLY_PUSH_SECONDS
        while not self.MPI.Request.Testall(reqs):
            if time.monotonic() > deadline:
                self.pending_sends.append((reqs, bufs))
                return

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the loop's thread at its next turn (thread-safe): how work done on other
        threads touches the store or sends replies."""
        self.soon.append(fn)

    def defer(self, req: Request, rep: Reply) -> None:
        """Send a reply computed on another thread (thread-safe)."""
        self.call_soon(lambda: self.reply(req, rep))

    def _progress_sends(self) -> None:
        if self.pending_sends:
            self.pending_sends = [(r, b) for r, b in self.pending_sends if not self.MPI.Request.Testall(r)]

    # ------------------------------------------------------------ requests
    def _handle(self, link: ServerLink, source: int, raw: np.ndarray) -> None:
        """A request header just received (``raw`` may be the reused receive buffer)."""
        self.stats.requests += 1
        try:
            header, fields = unpack_message(raw, REQUEST_MAGIC)
        except WireError as exc:
            self._reply_malformed(link, source, raw, f"malformed request: {exc}")
            return
        req = Request(link, source, header, fields, [])
        try:
            if not SEQ_MIN <= header.seq <= SEQ_MAX:
                raise ProtocolError(f"seq {header.seq} is outside {SEQ_MIN}..{SEQ_MAX}")
            nbytes = header.payload_nbytes
            if nbytes and header.flags & FLAG_INLINE:
                if not fields or len(fields[-1]) != nbytes:
                    raise ProtocolError(f"an inline payload of {nbytes} bytes must be the last field")
                part = self.alloc(nbytes)
                part[...] = np.frombuffer(fields.pop(), np.uint8)
                req.payload.append(part)
            elif nbytes and header.flags & FLAG_RMA:
                req.payload.append(self._read_slot(link, source, nbytes))
            elif nbytes:
                pending = PendingPayload(req, nbytes, time.monotonic() + self.payload_timeout)
                if not self._receive_parts(link, source, pending):
                    req.fields = unpack_message(raw.copy(), REQUEST_MAGIC)[1]  # raw will be reused
                    link.waiting[source] = pending
                    return
        except (MpistageError, WireError) as exc:
            self.reply(req, Reply.error(exc))
            return
        self._dispatch(req)

    def _dispatch(self, req: Request) -> None:
        """Run the request's handler (its payload is complete) and reply."""
        link = req.link
        try:
            if req.header.code == Op.BYE:
                self.reply(req, Reply())
                if link.goodbye(req.source):
                    self._retire(link)
                return
            handler = self.handlers.get(req.header.code)
            if handler is None:
                raise UnknownOperationError(f"unknown operation code {req.header.code}")
            rep = handler(req)
        except (MpistageError, WireError) as exc:
            rep = Reply.error(exc)
        except Exception as exc:  # a bug must not kill the shard: report it to the caller
            rep = Reply(Status.INTERNAL_ERROR, [f"internal error: {type(exc).__name__}: {exc}".encode()])
        if rep is not None:
            self.reply(req, rep)

    def _receive_parts(self, link: ServerLink, source: int, pending: PendingPayload) -> bool:
        """Receive the payload parts of ``pending`` that have arrived; True once all have.
        Raises ProtocolError when more bytes arrive than the header announced."""
        status = self._status
        payload = pending.request.payload
        while pending.got < pending.nbytes:
            msg = link.comm.Improbe(source, TAG_PAYLOAD, status)
            if msg is None:
                return False
            buf = self.alloc(status.Get_count(self.BYTE))
            msg.Recv(buf)
            payload.append(buf)
            pending.got += buf.nbytes
        if pending.got != pending.nbytes:
            raise ProtocolError(f"payload of {pending.got} bytes arrived, the header announced {pending.nbytes}")
        return True

    def _progress_waiting(self, link: ServerLink) -> bool:
        """Move on the requests of ``link`` that wait for their payload; True if any finished."""
        now, progressed = time.monotonic(), False
        for source, pending in list(link.waiting.items()):
            try:
                if not self._receive_parts(link, source, pending):
                    if now <= pending.deadline:
                        continue
                    raise ProtocolError(f"payload of {pending.nbytes} bytes announced, {pending.got} "
                                        f"arrived within {self.payload_timeout} s")
            except (MpistageError, WireError) as exc:
                del link.waiting[source]
                self.reply(pending.request, Reply.error(exc))
            else:
                del link.waiting[source]
                self._dispatch(pending.request)
            progressed = True
            self._run_backlog(link, source)
        return progressed

    def _run_backlog(self, link: ServerLink, source: int) -> None:
        """Requests ``source`` sent while an earlier one waited for its payload, in order."""
        queue = link.backlog.get(source)
        while queue and source not in link.waiting:
            self._handle(link, source, queue.popleft())
        if queue is not None and not queue:
            del link.backlog[source]

    @staticmethod
    def _read_slot(link: ServerLink, source: int, nbytes: int) -> np.ndarray:
        if nbytes > link.slot_bytes:
            raise ProtocolError(f"a one-sided payload of {nbytes} bytes does not fit the "
                                f"{link.slot_bytes}-byte window slot")
        return link.slot(source)[:nbytes].copy()

    def _reply_malformed(self, link: ServerLink, source: int, raw: np.ndarray, text: str) -> None:
        seq = _salvage_seq(raw)
        if seq is not None:
            self.reply(Request(link, source, Header(0, seq, 0), [], []),
                       Reply(Status.PROTOCOL_ERROR, [text.encode()]))

    def _poll_once(self) -> bool:
        busy = False
        while self.new_links:
            self.add_link(self.new_links.popleft())
        while self.soon:
            self.soon.popleft()()
            busy = True
        status, recv = self._status, self._recv
        for link in self._polled:
            if link.waiting and self._progress_waiting(link):
                busy = True
            msg = link.comm.Improbe(self.ANY_SOURCE, TAG_REQUEST, status)
            if msg is None:
                continue
            busy = True
            source, count = status.Get_source(), status.Get_count(self.BYTE)
            buf = recv[:count] if count <= recv.nbytes else np.empty(count, np.uint8)
            msg.Recv(buf)
            if count > MAX_HEADER_BYTES:
                self.stats.requests += 1
                self._reply_malformed(link, source, buf, "request header too large")
            elif source in link.waiting or source in link.backlog:  # keep each sender's order
                link.backlog.setdefault(source, collections.deque()).append(buf.copy())
            else:
                self._handle(link, source, buf)
        self._progress_sends()
        return busy

    def run(self) -> None:
        """Serve until a SHUTDOWN request, SIGTERM/SIGINT, or (MPMD) every client said goodbye."""
        def on_signal(signum: int, _frame: Any) -> None:
            self.stopping = True

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)
        backoff = Backoff(spin_seconds=SPIN_SECONDS)
        while not self.stopping:
            if self._poll_once():
                backoff.reset()
            else:
                backoff.pause()
        self._drain_sends()

    def _drain_sends(self) -> None:
        deadline = time.monotonic() + DRAIN_SECONDS
        backoff = Backoff()
        while self.pending_sends and time.monotonic() < deadline:
            self._progress_sends()
            backoff.pause()

    def shutdown_links(self, address: str | None) -> None:
        """After the loop has ended: finish releases, then stop accepting (``address`` is the
        connection file when this server accepts jobs)."""
        for t in self._threads:  # releases first: Open MPI must not run two of these at once
            t.join(timeout=RELEASE_JOIN_SECONDS)
        if address is not None and self._accept_thread is not None:
            if self.shard == 0:
                wake_accept_threads(address)
            self._accept_thread.join(timeout=ACCEPT_JOIN_SECONDS)
        # Links still open belong to jobs that did not say goodbye (SIGTERM came first):
        # releasing them is collective with those jobs, so they are left as they are.
        self.links.clear()
        self._polled = ()


def _salvage_seq(raw: np.ndarray) -> int | None:
    """The seq of a malformed request, when its first 12 bytes are readable, so the sender can
    be told; None otherwise (nobody would recognize the reply)."""
    if raw.nbytes < 12:
        return None
    seq = int(np.frombuffer(raw[8:12].tobytes(), "<u4")[0])
    return seq if SEQ_MIN <= seq <= SEQ_MAX else None
