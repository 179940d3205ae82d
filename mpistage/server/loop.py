"""The server rank's progress loop: polls every link, reads each request and its payload, hands
it to a handler, and sends exactly one reply. No client can corrupt another request's data or
stall the shard:

* a payload belongs to its request: its parts arrive on the request's payload tag
  (``TAG_PAYLOAD + seq``) from the request's sender, and land in buffers sized from the request's
  descriptors before anything is received (``admit``: the memory cap is checked on the announced
  size). A payload message without a live request is received into a sink, counted and logged.
* client links are read in arrival order (any tag), so nothing piles up unreceived, and a rank's
  messages come in the order it sent them: a request whose payload is cut short by the rank's next
  message fails at once; one whose payload is late waits while everyone else is served (on the
  peer link, and behind a header still arriving, a rank's later messages are held in order, at
  most ``MAX_HELD_MESSAGES`` per link);
* every receive and send is non-blocking; a payload not complete by its deadline (the payload
  timeout after its last message, plus its size at ``SLOWEST_BYTES_PER_S``) gets an error reply,
  and a link whose transfers (in or out) cannot complete by theirs is dropped
  (:meth:`ProgressLoop.drop_link`) with its pending state freed;
* a job that vanishes while idle (SIGKILL, a crashed node's local job) sends nothing and has
  nothing in flight: every ``WATCH_SECONDS`` the loop looks whether the processes a connect-mode
  job listed in its hello (same host only, :meth:`ServerLink.watch`) still exist, and drops the
  link of a job whose processes are all gone. No client thread is needed (Fortran has none).

New jobs are accepted, and finished ones released, on helper threads.
"""

from __future__ import annotations

import collections
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._mpi.framing import PayloadPath, payload_path
from .._mpi.links import LinkKind
from ..backoff import Backoff
from ..errors import BadArgumentError, MpistageError, ProtocolError, StoreFullError, UnknownOperationError
from ..mpienv import mpi
from ..protocol import (
    FLAG_INLINE,
    FLAG_RMA,
    MAX_HEADER_BYTES,
    PAYLOAD_OPS,
    REPLY_MAGIC,
    REQUEST_MAGIC,
    SEQ_MAX,
    SEQ_MIN,
    TAG_REQUEST,
    Header,
    Op,
    Status,
    WireError,
    check_request_header,
    chunks,
    is_payload_tag,
    message_limit,
    pack_message,
    payload_tag,
    unpack_message,
)
from .handlers import Handler, Reply, Request
from .inbound import Incoming, IncomingHeader, Sink
from .links import ServerLink, WindowBudget, accept_links
from .wake import wake_accept_threads

EAGER_BYTES = 4096  # request headers this small land in a reused buffer
MESSAGES_PER_TURN = 8  # messages taken from one link before the loop looks at the next one
MAX_HELD_MESSAGES = 256  # per link: messages held while their sender's earlier request waits
SPIN_SECONDS = 0.002  # after the last message, poll without sleeping this long
DRAIN_SECONDS = 5.0  # at the end, how long unfinished reply sends may take
RELEASE_JOIN_SECONDS = 10.0  # at the end, how long each link release may take
ACCEPT_JOIN_SECONDS = 30.0  # at the end, how long the accept thread may take to stop
FINISH_SPIN_SECONDS = 20e-6  # a matched payload message: test it this long before moving on...
FINISH_SPIN_BYTES_PER_S = 2e9  # ...plus its size at this rate...
FINISH_SPIN_MAX_SECONDS = 1e-3  # ...and never longer than this (a sender that died mid-message)
SLOWEST_BYTES_PER_S = 50e6  # a transfer's deadline grows by its size at this rate (large parts take time)
LOG_FIRST = 20  # discarded messages and dropped links: log the first ones, then every LOG_EVERY-th
LOG_EVERY = 1000
WATCH_SECONDS = 2.0  # how often the processes of watched jobs are looked at

#: Given a request with a payload (header and fields decoded, nothing received yet): the size of
#: each payload part it may carry, in order; raises an MpistageError to refuse it (e.g. store full).
Admit = Callable[[Request], list[int]]


def _one_part(req: Request) -> list[int]:
    return [req.header.payload_nbytes]


@dataclass
class LoopStats:
    requests: int = 0
    errors: int = 0
    dropped_links: int = 0
    internal_errors: int = 0


@dataclass(slots=True)
class PendingSend:
    """A reply whose sends have not completed: its buffers stay referenced until they have."""

    link: ServerLink
    requests: list[Any]
    buffers: list[Any]
    deadline: float


class ProgressLoop:
    """One server rank's request loop over its links. ``alloc(nbytes)`` gives the buffers that
    payloads are received into (the store's allocator: they are what the store keeps);
    ``admit`` sizes (or refuses) a payload before it is received."""

    def __init__(self, shard: int, handlers: dict[int, Handler], payload_timeout: float = 10.0,
                 alloc: Callable[[int], np.ndarray] | None = None, admit: Admit | None = None) -> None:
        self.MPI = mpi()
        self.BYTE, self.ANY_SOURCE, self.ANY_TAG = self.MPI.BYTE, self.MPI.ANY_SOURCE, self.MPI.ANY_TAG
        self.shard = shard
        self.handlers = handlers
        self.payload_timeout = payload_timeout
        self.alloc = alloc or (lambda n: np.empty(n, np.uint8))
        self.admit = admit or _one_part
        self.links: list[ServerLink] = []
        self._polled: tuple[ServerLink, ...] = ()
        self.new_links: collections.deque[ServerLink] = collections.deque()
        self.soon: collections.deque[Callable[[], None]] = collections.deque()
        self.pending_sends: list[PendingSend] = []
        #: receives and sends of dropped links and discarded messages that may never complete
        #: (a dead sender): referenced here, with their buffers, until they do
        self.abandoned: list[tuple[Any, Any]] = []
        #: links dropped by :meth:`drop_link`, with the reason (their release belongs to ``on_drop``)
        self.dropped: list[tuple[ServerLink, str]] = []
        self.on_drop: Callable[[ServerLink, str], None] | None = None
        self.sink = Sink()
        self.stats = LoopStats()
        self.stopping = False
        self.stop_after_last_job = False
        self._threads: list[threading.Thread] = []
        self._accept_thread: threading.Thread | None = None
        self._status = self.MPI.Status()
        self._recv = np.empty(EAGER_BYTES, np.uint8)  # request headers land here (copied if kept)
        self._chunk = message_limit()
        self.memory_bytes = _physical_memory()
        self._next_watch = 0.0

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

    def _forget(self, link: ServerLink) -> None:
        self.links.remove(link)
        self._polled = tuple(self.links)
        if self.stop_after_last_job and all(lk.kind == LinkKind.PEER for lk in self.links):
            self.stopping = True

    def _retire(self, link: ServerLink) -> None:
        """Every rank of the link's job said goodbye: release it on a helper thread, since the
        release is collective with that job and must not stall the other jobs."""
        self._forget(link)
        self._threads = [t for t in self._threads if t.is_alive()]
        t = threading.Thread(target=link.free, name="mpistage-release", daemon=True)
        t.start()
        self._threads.append(t)

    def drop_link(self, link: ServerLink, why: str) -> None:
        """Stop serving ``link`` (a job that vanished or stalls its transfers): it is no longer
        polled, its held messages are received into the sink, its waiting requests and unsent
        replies are forgotten (their MPI requests kept in :attr:`abandoned` until they complete),
        and ``on_drop(link, why)`` is called (releasing the link, collective with a job that may be
        gone, is its business). Call it on the loop's thread (from others: ``call_soon``)."""
        if link not in self.links:
            return
        self._forget(link)
        for state in link.waiting.values():
            if isinstance(state, IncomingHeader):
                self.abandoned.append((state.receive, state.buf))
            else:
                self.abandoned += [(r, state.parts) for r in state.receives]
        link.waiting.clear()
        for queue in link.backlog.values():
            for msg, _tag, count in queue:
                self.abandoned.append((self.sink.receive(msg, count), None))
        link.backlog.clear()
        keep = []
        for p in self.pending_sends:
            if p.link is link:
                self.abandoned += [(r, p.buffers) for r in p.requests]
            else:
                keep.append(p)
        self.pending_sends = keep
        self.stats.dropped_links += 1
        self.dropped.append((link, why))
        self._log(f"dropped a {link.kind.value} link of {link.nclients} ranks: {why}")
        if self.on_drop is not None:
            self.on_drop(link, why)

    def report(self) -> dict[str, Any]:
        """Requests, errors, links and discarded messages, for INFO."""
        return {"requests": self.stats.requests, "errors": self.stats.errors,
                "client_jobs": sum(link.kind != LinkKind.PEER for link in self.links),
                "links": [link.report() for link in self.links],
                "pending_sends": len(self.pending_sends), "release_threads": len(self._threads),
                "discarded_messages": self.sink.discarded_messages,
                "discarded_bytes": self.sink.discarded_bytes, "dropped_links": self.stats.dropped_links,
                "abandoned_transfers": len(self.abandoned), "internal_errors": self.stats.internal_errors}

    def _log(self, text: str) -> None:
        print(f"mpistage-server shard {self.shard}: {text}", file=sys.stderr, flush=True)

    # ------------------------------------------------------------ replies
    def reply(self, req: Request, rep: Reply) -> None:
        """Send ``rep`` for ``req`` without blocking; safe only on the loop's thread. The payload
        takes the path :func:`~mpistage._mpi.framing.payload_path` chooses for what the request
        allows (inline, the client's window slot, or messages of at most ``MAX_MESSAGE_BYTES``).
        A reply to a dropped link, or to a seq no one could recognize, is not sent."""
        link, flags, nbytes = req.link, 0, 0
        if rep.status != Status.OK:
            self.stats.errors += 1
        if not SEQ_MIN <= req.header.seq <= SEQ_MAX or link not in self._polled:
            return
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
        comm, dest, tag = link.comm, req.source, req.header.seq
        first = comm.Isend(head, dest, tag)
        if not payload and first.Test():  # small replies: eager, complete at once
            return
        bufs: list[Any] = [head]
        reqs = [first]
        for part in payload:
            flat = part.reshape(-1).view(np.uint8)
            for off, size in chunks(flat.nbytes, self._chunk):
                reqs.append(comm.Isend(flat[off:off + size], dest, tag))
            bufs.append(flat)
        if not self.MPI.Request.Testall(reqs):
            self.pending_sends.append(PendingSend(link, reqs, bufs, self._deadline(nbytes)))

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the loop's thread at its next turn (thread-safe): how work done on other
        threads touches the store or sends replies."""
        self.soon.append(fn)

    def defer(self, req: Request, rep: Reply) -> None:
        """Send a reply computed on another thread (thread-safe)."""
        self.call_soon(lambda: self.reply(req, rep))

    def _progress_sends(self) -> None:
        """Test the unfinished replies; a link whose replies do not complete within the payload
        timeout (its job is gone, or does not receive) is dropped."""
        if self.pending_sends:
            now, late = time.monotonic(), []
            keep = []
            for p in self.pending_sends:
                if self.MPI.Request.Testall(p.requests):
                    continue
                keep.append(p)
                if now > p.deadline:
                    late.append(p.link)
            self.pending_sends = keep
            for link in dict.fromkeys(late):
                self.drop_link(link, f"its reply sends did not complete within {self.payload_timeout} s")
        if self.abandoned:
            self.abandoned = [(r, b) for r, b in self.abandoned if not r.Test()]

    # ------------------------------------------------------------ messages
    def _poll_link(self, link: ServerLink) -> bool:
        """Take up to ``MESSAGES_PER_TURN`` messages of ``link`` in arrival order; True if any."""
        busy = bool(link.waiting) and self._progress_waiting(link)
        status = self._status
        for _ in range(MESSAGES_PER_TURN):
            if link not in self._polled:
                return True  # dropped meanwhile
            msg = self._probe(link, status)
            if msg is None:
                break
            busy = True
            source, tag, count = status.Get_source(), status.Get_tag(), status.Get_count(self.BYTE)
            try:
                self._arrived(link, source, tag, count, msg)
                if source in link.backlog:
                    self._drain_backlog(link, source)
            except Exception:  # a bug must not kill the shard
                self.stats.internal_errors += 1
                self._log(f"internal error on a message from rank {source} (tag {tag}):\n"
                          f"{traceback.format_exc()}")
        return busy

    def _probe(self, link: ServerLink, status: Any) -> Any:
        """The next message of ``link``: any tag on client links (where the server only ever
        receives requests and payloads); on the peer link, requests and the payload tags awaited
        (replies to this shard's own peer requests arrive there too, for its peer client)."""
        comm = link.comm
        if link.kind != LinkKind.PEER:
            return comm.Improbe(self.ANY_SOURCE, self.ANY_TAG, status)
        for source, state in link.waiting.items():
            if isinstance(state, Incoming) and state.left:
                msg = comm.Improbe(source, state.tag, status)
                if msg is not None:
                    return msg
        return comm.Improbe(self.ANY_SOURCE, TAG_REQUEST, status)

    def _arrived(self, link: ServerLink, source: int, tag: int, count: int, msg: Any) -> None:
        """A matched message: a payload part of ``source``'s request in progress, held when the
        source is busy (its order kept), else handled."""
        state = link.waiting.get(source)
        if isinstance(state, Incoming) and tag == state.tag and state.left:
            self._take_part(link, source, state, msg, count)
        elif isinstance(state, Incoming) and state.left and link.kind != LinkKind.PEER and source not in link.backlog:
            self._preempt(link, source, state, tag)
            self._message(link, source, tag, count, msg)
        elif state is not None or source in link.backlog:
            self._hold(link, source, tag, count, msg)
        else:
            self._message(link, source, tag, count, msg)

    def _preempt(self, link: ServerLink, source: int, inc: Incoming, tag: int) -> None:
        """A client rank sent another message before the rest of a payload: messages of one rank
        arrive in the order they were sent, so the rest is not coming. Its request fails now (a
        refused request's payload is simply no longer expected) and the rank is served on."""
        if inc.request is not None:
            self.reply(inc.request, Reply(Status.PROTOCOL_ERROR, [
                f"a message on tag {tag} came before the last {inc.left} bytes of this request's "
                f"payload".encode()]))
        inc.abandon()
        self.abandoned += [(r, inc.parts) for r in inc.receives]
        del link.waiting[source]

    def _hold(self, link: ServerLink, source: int, tag: int, count: int, msg: Any) -> None:
        held = sum(len(q) for q in link.backlog.values())
        if held >= MAX_HELD_MESSAGES:
            state = link.waiting.get(source)
            if isinstance(state, Incoming) and state.request is not None:
                self.reply(state.request, Reply(Status.PROTOCOL_ERROR, [
                    f"{held} later messages arrived while its payload did not: request abandoned".encode()]))
            if isinstance(state, Incoming):
                state.abandon()
                self._advance(link, source, state)
            if held >= 2 * MAX_HELD_MESSAGES:
                self.abandoned.append((self.sink.receive(msg, count), None))
                self.drop_link(link, f"more than {held} messages held unanswered")
                return
        link.backlog.setdefault(source, collections.deque()).append((msg, tag, count))

    def _drain_backlog(self, link: ServerLink, source: int) -> None:
        """Handle the messages held for ``source``, in order, while it is not busy."""
        queue = link.backlog.get(source)
        while queue and link in self._polled:
            msg, tag, count = queue[0]
            state = link.waiting.get(source)
            if state is None:
                queue.popleft()
                self._message(link, source, tag, count, msg)
            elif isinstance(state, Incoming) and tag == state.tag and state.left:
                queue.popleft()
                self._take_part(link, source, state, msg, count)
            else:
                return
        if queue is not None and not queue and link.backlog.get(source) is queue:
            del link.backlog[source]

    def _message(self, link: ServerLink, source: int, tag: int, count: int, msg: Any) -> None:
        """A message of an idle source: a request header, or a stray (discarded, logged)."""
        if tag != TAG_REQUEST:
            self._discard(source, tag, count, msg, "a payload without a live request" if is_payload_tag(tag)
                          else "a message on a tag no request uses")
            return
        self.stats.requests += 1
        if count > MAX_HEADER_BYTES:
            self.stats.errors += 1
            self._discard(source, tag, count, msg, f"a request message over {MAX_HEADER_BYTES} bytes")
            return
        buf = self._recv[:count] if count <= EAGER_BYTES else np.empty(count, np.uint8)
        receive = msg.Irecv(buf)
        if receive.Test():  # the reused buffer's bytes are copied: a request's fields outlive it
            self._handle(link, source, buf.tobytes() if count <= EAGER_BYTES else buf)
            return
        if count <= EAGER_BYTES:  # the reused buffer now belongs to this receive
            self._recv = np.empty(EAGER_BYTES, np.uint8)
        link.waiting[source] = IncomingHeader(buf, receive, self._deadline(count))

    def _discard(self, source: int, tag: int, count: int, msg: Any, why: str) -> None:
        self.abandoned.append((self.sink.receive(msg, count), None))
        n = self.sink.discarded_messages
        if n <= LOG_FIRST or n % LOG_EVERY == 0:
            self._log(f"discarded a message of {count} bytes from rank {source} on tag {tag}: {why} "
                      f"({n} discarded so far)")

    def _deadline(self, nbytes: int) -> float:
        """When a transfer of ``nbytes`` that starts now is late: the payload timeout, plus the
        time its bytes take at ``SLOWEST_BYTES_PER_S``."""
        return time.monotonic() + self.payload_timeout + nbytes / SLOWEST_BYTES_PER_S

    def _take_part(self, link: ServerLink, source: int, inc: Incoming, msg: Any, count: int) -> None:
        """Receive a payload message of ``inc``'s request into its next bytes (or the sink); each
        message that arrives moves the deadline on by its size."""
        inc.deadline = max(inc.deadline, self._deadline(count))
        target = inc.place(count)
        if target is None:
            if inc.request is not None:
                self.reply(inc.request, Reply(Status.PROTOCOL_ERROR, [
                    f"a payload message of {count} bytes does not fit what the request announced "
                    f"({inc.left} bytes left)".encode()]))
                inc.abandon()
            inc.left = max(0, inc.left - count)
            inc.receives.append(self.sink.receive(msg, count))
        else:
            receive = msg.Irecv(target)
            self._finish_soon(receive, count)
            inc.receives.append(receive)
        self._advance(link, source, inc)

    def _finish_soon(self, receive: Any, nbytes: int) -> None:
        """Test a receive whose message has been matched for a short, bounded while (its bytes are
        on their way: a sender mid-transfer is alive) instead of coming back to it a loop turn
        later; a transfer that takes longer is left to the loop."""
        test = receive.Test
        if test():
            return
        spin = min(FINISH_SPIN_MAX_SECONDS, FINISH_SPIN_SECONDS + nbytes / FINISH_SPIN_BYTES_PER_S)
        until = time.perf_counter() + spin
        while time.perf_counter() < until:
            if test():
                return

    def _advance(self, link: ServerLink, source: int, inc: Incoming) -> bool:
        """Dispatch ``inc``'s request once its whole payload is in; True when the source is free."""
        if inc.left or not inc.received():
            return False
        del link.waiting[source]
        if inc.request is not None:
            self._dispatch(inc.request)
        return True

    def _progress_waiting(self, link: ServerLink) -> bool:
        """Move on the receives of ``link`` that wait; True if any finished. A payload not in by
        its deadline gets an error reply; one whose transfer started but cannot finish (a sender
        that died mid-message) drops the link."""
        now, progressed = time.monotonic(), False
        for source, state in list(link.waiting.items()):
            if link not in self._polled:
                return True
            if isinstance(state, IncomingHeader):
                if state.receive.Test():
                    del link.waiting[source]
                    self._handle(link, source, state.buf)
                elif now > state.deadline:
                    self.drop_link(link, f"a request from rank {source} was not received within "
                                         f"{self.payload_timeout} s")
                    return True
                else:
                    continue
            elif not self._advance(link, source, state):
                if now <= state.deadline:
                    continue
                if state.receives:
                    self.drop_link(link, f"a payload from rank {source} did not finish arriving within "
                                         f"{self.payload_timeout} s")
                    return True
                del link.waiting[source]
                if state.request is not None:
                    got = sum(p.nbytes for p in state.parts) - state.left
                    self.reply(state.request, Reply(Status.PROTOCOL_ERROR, [
                        f"payload of {got + state.left} bytes announced, {got} arrived within "
                        f"{self.payload_timeout} s".encode()]))
            progressed = True
            if source in link.backlog:
                self._drain_backlog(link, source)
        return progressed

    # ------------------------------------------------------------ requests
    def _handle(self, link: ServerLink, source: int, raw: bytes | np.ndarray) -> None:
        """A request header just received (``raw`` is this request's own: its fields view it)."""
        try:
            header, fields = unpack_message(raw, REQUEST_MAGIC)
        except WireError as exc:
            self._reply_malformed(link, source, raw, f"malformed request: {exc}")
            return
        req = Request(link, source, header, fields, [])
        nbytes = header.payload_nbytes
        point_to_point = False
        try:
            check_request_header(header)
            point_to_point = bool(nbytes) and not header.flags & (FLAG_INLINE | FLAG_RMA)
            if nbytes:
                if header.code not in self.handlers:
                    raise UnknownOperationError(f"unknown operation code {header.code}")
                if header.code not in PAYLOAD_OPS:
                    raise ProtocolError(f"{Op(header.code).name} takes no payload, {nbytes} bytes were announced")
                if nbytes > self.memory_bytes:
                    raise StoreFullError(f"a payload of {nbytes} bytes is more than this machine's memory")
                self._payload(req, link, source)
                if point_to_point:
                    return
        except (MpistageError, WireError) as exc:
            self.reply(req, Reply.error(exc))
            if point_to_point and SEQ_MIN <= header.seq <= SEQ_MAX:  # its parts are thrown away as they come
                link.waiting[source] = Incoming(None, payload_tag(header.seq), [], nbytes, self._deadline(0))
            return
        self._dispatch(req)

    def _payload(self, req: Request, link: ServerLink, source: int) -> None:
        """Size the request's payload (``admit``: nothing is allocated for a refused one), then take
        it inline, from the window slot, or start waiting for its messages."""
        header, fields = req.header, req.fields
        nbytes = header.payload_nbytes
        if header.flags & FLAG_INLINE:
            if not fields or len(fields[-1]) != nbytes:
                raise ProtocolError(f"an inline payload of {nbytes} bytes must be the last field")
            inline = fields.pop()
            self._admitted(req)
            part = self.alloc(nbytes)
            part[...] = np.frombuffer(inline, np.uint8)
            req.payload.append(part)
        elif header.flags & FLAG_RMA:
            if nbytes > link.slot_bytes:
                raise ProtocolError(f"a one-sided payload of {nbytes} bytes does not fit the "
                                    f"{link.slot_bytes}-byte window slot")
            self._admitted(req)
            part = self.alloc(nbytes)
            part[...] = link.slot(source)[:nbytes]
            req.payload.append(part)
        else:
            sizes = self._admitted(req)
            try:
                req.payload = [self.alloc(n) for n in sizes if n]
            except MemoryError:
                raise StoreFullError(f"no memory for a payload of {nbytes} bytes") from None
            link.waiting[source] = Incoming(req, payload_tag(header.seq), req.payload, nbytes, self._deadline(0))

    def _admitted(self, req: Request) -> list[int]:
        sizes = self.admit(req)
        if sum(sizes) != req.header.payload_nbytes or min(sizes, default=0) < 0:
            raise BadArgumentError(f"a payload of {req.header.payload_nbytes} bytes was announced, the "
                                   f"request's descriptors say {sum(sizes)}")
        return sizes

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

    def _reply_malformed(self, link: ServerLink, source: int, raw: bytes | np.ndarray, text: str) -> None:
        seq = _salvage_seq(raw)
        if seq is not None:
            self.reply(Request(link, source, Header(0, seq, 0), [], []),
                       Reply(Status.PROTOCOL_ERROR, [text.encode()]))
        else:
            self.stats.errors += 1

    def _poll_once(self) -> bool:
        busy = False
        while self.new_links:
            self.add_link(self.new_links.popleft())
        while self.soon:
            fn = self.soon.popleft()
            try:
                fn()
            except Exception:  # work handed over by another thread must not kill the shard
                self.stats.internal_errors += 1
                self._log(f"internal error in deferred work:\n{traceback.format_exc()}")
            busy = True
        for link in self._polled:
            try:
                busy = self._poll_link(link) or busy
            except Exception:  # a bug must not kill the shard
                self.stats.internal_errors += 1
                self._log(f"internal error while polling a {link.kind.value} link:\n{traceback.format_exc()}")
        self._progress_sends()
        if time.monotonic() >= self._next_watch:
            self._drop_vanished()
        return busy

    def _drop_vanished(self) -> None:
        """Drop the links of watched jobs whose processes are all gone."""
        self._next_watch = time.monotonic() + WATCH_SECONDS
        for link in self._polled:
            if link.vanished():
                self.drop_link(link, f"every process of its job is gone (pids {', '.join(map(str, link.pids))})")

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


def _physical_memory() -> int:
    """This machine's memory in bytes (no payload may be announced beyond it)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 1 << 48


def _salvage_seq(raw: bytes | np.ndarray) -> int | None:
    """The seq of a malformed request, when its first 12 bytes are readable, so the sender can
    be told; None otherwise (nobody would recognize the reply)."""
    if len(raw) < 12:
        return None
    seq = int.from_bytes(bytes(raw[8:12]), "little")
    return seq if SEQ_MIN <= seq <= SEQ_MAX else None
