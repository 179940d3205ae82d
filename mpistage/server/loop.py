"""The server rank's progress loop: polls every connected client job, reads each request and
its payload, hands it to a handler, and sends exactly one reply. It never blocks on a client:
replies are non-blocking sends, payloads arrive under a deadline, and a bad message gets an
error reply. New jobs are accepted, and finished ones disconnected, on helper threads.
"""

from __future__ import annotations

import collections
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._mpi.links import LinkKind
from ..errors import MpistageError, ProtocolError, UnknownOperationError
from ..mpienv import mpi
from ..protocol import (
    FLAG_INLINE,
    FLAG_RMA,
    INLINE_MAX_BYTES,
    MAX_HEADER_BYTES,
    REPLY_MAGIC,
    REQUEST_MAGIC,
    RMA_MIN_BYTES,
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
from .session import ClientLink, accept_links
from .wake import wake_accept_threads

EAGER_BYTES = 4096  # replies this small go out with a blocking send, which completes at once
REPLY_PUSH_SECONDS = 0.005  # drive a reply's transfer this long before going back to polling
SPIN_SECONDS = 0.002  # after the last message, poll without sleeping this long
MAX_SLEEP = 0.001  # then sleep, doubling from 20 us up to this


@dataclass
class LoopStats:
    requests: int = 0
    errors: int = 0
    started: float = field(default_factory=time.time)


class ProgressLoop:
    """One server rank's request loop over the links to its client jobs."""

    def __init__(self, shard: int, nshards: int, handlers: dict[int, Handler],
                 payload_timeout: float = 10.0) -> None:
        self.MPI = mpi()
        self.BYTE, self.ANY_SOURCE = self.MPI.BYTE, self.MPI.ANY_SOURCE
        self.shard = shard
        self.nshards = nshards
        self.handlers = handlers
        self.payload_timeout = payload_timeout
        self.links: list[ClientLink] = []
        self.new_links: collections.deque[ClientLink] = collections.deque()
        self.soon: collections.deque[Callable[[], None]] = collections.deque()
        self.pending_sends: list[tuple[Any, list[Any]]] = []
        self.stats = LoopStats()
        self.stopping = False
        self.stop_when_idle_links = False
        self._threads: list[threading.Thread] = []
        self._status = self.MPI.Status()

    # ------------------------------------------------------------ links
    def add_link(self, link: ClientLink) -> None:
        self.links.append(link)

    def start_accepting(self, accept_comm: Any, port: str | None, window_bytes: int) -> None:
        """Take in client jobs in a background thread (shard 0 accepts on ``port``)."""
        t = threading.Thread(target=accept_links,
                             args=(accept_comm, port, window_bytes, self.new_links),
                             name="mpistage-accept", daemon=True)
        t.start()
        self._accept_thread = t

    def _retire(self, link: ClientLink) -> None:
        """Every rank of the link's job said goodbye: release it on a helper thread, since the
        release is collective with that job and must not stall the other jobs."""
        self.links.remove(link)
        t = threading.Thread(target=link.free, name="mpistage-release", daemon=True)
        t.start()
        self._threads.append(t)
        if self.stop_when_idle_links and all(lk.kind == LinkKind.PEER for lk in self.links):
            self.stopping = True

    # ------------------------------------------------------------ replies
    def reply(self, req: Request, rep: Reply, link: ClientLink | None = None) -> None:
        """Send ``rep`` for ``req`` without blocking; safe only on the loop's thread. A single
        large payload goes through the client's window slot when the request allows it."""
        nbytes = sum(int(p.nbytes) for p in rep.payload) if rep.payload else 0
        flags = 0
        if (link is not None and req.header.flags & FLAG_RMA and len(rep.payload) == 1
                and RMA_MIN_BYTES <= nbytes <= link.slot_bytes):
            link.slot(req.source)[:nbytes] = rep.payload[0].reshape(-1).view(np.uint8)
            rep.payload, flags = [], FLAG_RMA
        elif req.header.flags & FLAG_INLINE and len(rep.payload) == 1 and nbytes <= INLINE_MAX_BYTES:
            rep.fields = [*rep.fields, rep.payload[0].tobytes()]
            rep.payload, flags = [], FLAG_INLINE
        head = pack_message(REPLY_MAGIC, rep.status, req.header.seq, rep.fields, nbytes, flags)
        if rep.status != Status.OK:
            self.stats.errors += 1
        if not rep.payload and len(head) <= EAGER_BYTES:
            req.comm.Send(head, req.source, req.header.seq)  # eager: completes at once
            return
        bufs: list[Any] = [np.frombuffer(head, np.uint8)] + list(rep.payload)
        reqs = [req.comm.Isend(b, req.source, req.header.seq) for b in bufs]
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
            self.pending_sends = [(r, b) for r, b in self.pending_sends
                                  if not self.MPI.Request.Testall(r)]

    # ------------------------------------------------------------ requests
    def _receive_payload(self, link: ClientLink, source: int, nbytes: int) -> list[np.ndarray]:
        """Receive payload parts from ``source`` until ``nbytes`` have arrived, or fail."""
        parts: list[np.ndarray] = []
        got = 0
        deadline = None
        status = self._status
        while got < nbytes:
            msg = link.comm.Improbe(source, TAG_PAYLOAD, status)
            if msg is None:
                if deadline is None:
                    deadline = time.monotonic() + self.payload_timeout
                elif time.monotonic() > deadline:
                    raise ProtocolError(f"payload of {nbytes} bytes announced, {got} arrived "
                                        f"within {self.payload_timeout} s")
                os.sched_yield()
                continue
            buf = np.empty(status.Get_count(self.BYTE), np.uint8)
            msg.Recv(buf)
            parts.append(buf)
            got += buf.nbytes
        if got != nbytes:
            raise ProtocolError(f"payload of {got} bytes arrived, the header announced {nbytes}")
        return parts

    @staticmethod
    def _read_slot(link: ClientLink, source: int, nbytes: int) -> np.ndarray:
        if nbytes > link.slot_bytes:
            raise ProtocolError(f"a one-sided payload of {nbytes} bytes does not fit the "
                                f"{link.slot_bytes}-byte window slot")
        return link.slot(source)[:nbytes].copy()

    def _handle(self, link: ClientLink, source: int, raw: np.ndarray) -> None:
        self.stats.requests += 1
        try:
            header, fields = unpack_message(raw, REQUEST_MAGIC)
        except WireError as exc:
            seq = _salvage_seq(raw)
            if seq is not None:
                self.reply(Request(link.comm, source, Header(0, seq, 0), [], []),
                           Reply(Status.PROTOCOL_ERROR, [f"malformed request: {exc}".encode()]))
            return
        req = Request(link.comm, source, header, fields, [])
        try:
            if not SEQ_MIN <= header.seq <= SEQ_MAX:
                raise ProtocolError(f"seq {header.seq} is outside {SEQ_MIN}..{SEQ_MAX}")
            if header.flags & FLAG_INLINE and header.payload_nbytes:
                if not fields or len(fields[-1]) != header.payload_nbytes:
                    raise ProtocolError(f"an inline payload of {header.payload_nbytes} bytes must be the last field")
                req.payload = [np.frombuffer(fields.pop(), np.uint8)]
            elif header.flags & FLAG_RMA and header.payload_nbytes:
                req.payload = [self._read_slot(link, source, header.payload_nbytes)]
            else:
                req.payload = self._receive_payload(link, source, header.payload_nbytes)
            if header.code == Op.BYE:
                self.reply(req, Reply())
                if link.goodbye(source):
                    self._retire(link)
                return
            handler = self.handlers.get(header.code)
            if handler is None:
                raise UnknownOperationError(f"unknown operation code {header.code}")
            rep = handler(req)
        except (MpistageError, WireError) as exc:
            rep = Reply.error(exc)
        except Exception as exc:  # a bug must not kill the shard: report it to the caller
            rep = Reply(Status.INTERNAL_ERROR, [f"internal error: {type(exc).__name__}: {exc}".encode()])
        if rep is not None:
            self.reply(req, rep, link)

    def _poll_once(self) -> bool:
        busy = False
        while self.new_links:
            self.add_link(self.new_links.popleft())
        while self.soon:
            self.soon.popleft()()
            busy = True
        status = self._status
        for link in tuple(self.links):
            msg = link.comm.Improbe(self.ANY_SOURCE, TAG_REQUEST, status)
            if msg is None:
                continue
            busy = True
            source, count = status.Get_source(), status.Get_count(self.BYTE)
            if count > MAX_HEADER_BYTES:
                buf = np.empty(count, np.uint8)
                msg.Recv(buf)
                self.stats.requests += 1
                seq = _salvage_seq(buf)
                if seq is not None:
                    self.reply(Request(link.comm, source, Header(0, seq, 0), [], []),
                               Reply(Status.PROTOCOL_ERROR, [b"request header too large"]))
                continue
            buf = np.empty(count, np.uint8)
            msg.Recv(buf)
            self._handle(link, source, buf)
        self._progress_sends()
        return busy

    def run(self) -> None:
        """Serve until a SHUTDOWN request, SIGTERM/SIGINT, or (MPMD) every client said goodbye."""
        def on_signal(signum: int, _frame: Any) -> None:
            self.stopping = True

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)
        last_busy = time.monotonic()
        sleep = 0.0
        while not self.stopping:
            if self._poll_once():
                last_busy = time.monotonic()
                sleep = 0.0
                continue
            if time.monotonic() - last_busy < SPIN_SECONDS:
                os.sched_yield()
            else:
                sleep = min(MAX_SLEEP, max(sleep * 2, 20e-6))
                time.sleep(sleep)
        self._drain_sends()

    def _drain_sends(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while self.pending_sends and time.monotonic() < deadline:
            self._progress_sends()
            time.sleep(0.001)

    def shutdown_links(self, address: str | None) -> None:
        """After the loop has ended: finish releases, then stop accepting (``address`` is the
        connection file when this server accepts jobs)."""
        for t in self._threads:  # releases first: Open MPI must not run two of these at once
            t.join(timeout=10)
        if address is not None:
            if self.shard == 0:
                wake_accept_threads(address)
            self._accept_thread.join(timeout=30)
        # Links still open belong to jobs that did not say goodbye (SIGTERM came first):
        # releasing them is collective with those jobs, so they are left as they are.
        self.links.clear()


def _salvage_seq(raw: np.ndarray) -> int | None:
    """The seq of a malformed request, when its first 12 bytes are readable, so the sender can
    be told; None otherwise (nobody would recognize the reply)."""
    if raw.nbytes < 12:
        return None
    seq = int(np.frombuffer(raw[8:12].tobytes(), "<u4")[0])
    return seq if SEQ_MIN <= seq <= SEQ_MAX else None
