"""The client's side of the wire: one :class:`ServerConnection` per process, shared by every
``Client`` in it. Sends a request (header, then payload inline, point-to-point or through the
shard's one-sided window: :func:`framing.payload_path` decides), and receives the reply tagged
with the request's ``seq``.

Two invariants live here and nowhere else:

* a request id (``seq``, the reply's tag) is never reused while its request is in flight, an
  outstanding asynchronous run included; and a reply's payload is always consumed, received or
  drained, even when the caller's code raises after the reply header arrived;
* a rank's window slot on a shard serves one transfer at a time: requests that move a payload
  through it hold :attr:`ServerConnection.lock` from the request to the end of the reply.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TypeVar

import numpy as np

from ..errors import BadArgumentError, MpistageError, ProtocolError, ServerUnreachableError, error_for_status
from ..mpienv import mpi
from ..protocol import (
    FLAG_INLINE,
    FLAG_RMA,
    MAX_FIELDS,
    MAX_HEADER_BYTES,
    MAX_MESSAGE_BYTES,
    REPLY_MAGIC,
    REQUEST_MAGIC,
    SEQ_MAX,
    SEQ_MIN,
    TAG_REQUEST,
    Header,
    Op,
    chunks,
    message_limit,
    pack_message,
    payload_tag,
    unpack_message,
)
from .framing import PayloadPath, payload_path
from .links import Link, release

R = TypeVar("R")
#: Reads a reply's fields (valid only during the call: they view a reused buffer).
Read = Callable[[list[memoryview]], R]
#: Given a reply's fields: the result, and the contiguous uint8 arrays its payload lands in.
Targets = Callable[[list[memoryview]], tuple[R, list[np.ndarray]]]

RECEIVE_BUFFER_BYTES = 64 << 10  # replies up to this size are received without an allocation
SEQ_SPAN = SEQ_MAX - SEQ_MIN + 1


class PendingReply(NamedTuple):
    """A sent request whose reply has not been read yet (see ``ServerConnection.start``)."""

    shard: int
    seq: int


class ServerConnection:
    """The link from this process to every shard; thread-safe (requests are serialized)."""

    def __init__(self, link: Link, app_comm: Any) -> None:
        MPI = mpi()
        self.link = link
        self.app_comm = app_comm
        self.nshards: int = link.inter.Get_remote_size()
        self.rank: int = link.inter.Get_rank()
        self.slot_bytes = link.slot_bytes if link.kind.crosses_jobs else 0
        self.lock = threading.RLock()
        self.closed = False
        self._MPI = MPI
        self._byte = MPI.BYTE
        self._status = MPI.Status()
        self._buffer = np.empty(RECEIVE_BUFFER_BYTES, np.uint8)
        self._next_seq = SEQ_MIN
        self._in_flight: set[int] = set()
        self._received = 0  # payload bytes of the reply being read, received so far
        self._chunk = message_limit()

    # ------------------------------------------------------------ requests
    def request(self, shard: int, op: Op, fields: list[bytes], payload: Sequence[np.ndarray] = (),
                read: Read[R] | None = None) -> R | None:
        """Send a request and wait for its reply (which carries no payload); returns
        ``read(fields)``, or None without ``read``. Raises the typed error of a non-OK status."""
        with self.lock:
            return self._finish(self._start(shard, op, fields, payload, False), read)

    def fetch(self, shard: int, op: Op, fields: list[bytes], targets: Targets[R],
              one_part_reply: bool = False) -> R:
        """Send a request whose reply carries a payload: ``targets(reply fields)`` gives the result
        and the arrays the payload is received into. Whatever ``targets`` or the receive raises,
        the payload is consumed first. With ``one_part_reply`` the server may answer inline or
        one-sided."""
        with self.lock:
            pending = self._start(shard, op, fields, (), one_part_reply)
            header, reply = self._reply(pending)
            self._received = 0
            try:
                result, parts = targets(reply)
                self._receive_payload(pending, header, reply, parts)
            except BaseException:
                self._drain(pending, header)
                raise
            finally:
                self._in_flight.discard(pending.seq)
            return result

    def request_all(self, requests: Sequence[tuple[int, Op, list[bytes], Sequence[np.ndarray]]]
                    ) -> list[MpistageError | None]:
        """Send every ``(shard, op, fields, payload)`` at once, then collect every reply; returns
        each one's error (None for success) in order. Every reply is read even when one fails."""
        outcomes: list[MpistageError | None] = []
        with self.lock:
            pendings = []
            try:
                for shard, op, fields, payload in requests:
                    pendings.append(self._start(shard, op, fields, payload, False))
            finally:
                for p in pendings:
                    try:
                        self._finish(p, None)
                        outcomes.append(None)
                    except MpistageError as exc:
                        outcomes.append(exc)
        return outcomes

    def start(self, shard: int, op: Op, fields: list[bytes]) -> PendingReply:
        """Send a request without a payload and return at once; its reply is read with
        :meth:`finish` (the ``seq`` stays reserved until then)."""
        with self.lock:
            return self._start(shard, op, fields, (), False)

    def finish(self, pending: PendingReply, read: Read[R] | None = None) -> R | None:
        """Wait for the reply to :meth:`start`'s request (no payload); as :meth:`request`."""
        with self.lock:
            return self._finish(pending, read)

    def test(self, pending: PendingReply) -> bool:
        """True when the reply to ``pending`` has arrived (:meth:`finish` will not wait)."""
        return bool(self.link.inter.Iprobe(pending.shard, pending.seq))

    # ------------------------------------------------------------ the wire
    def _take_seq(self) -> int:
        seq, in_flight = self._next_seq, self._in_flight
        if seq not in in_flight:  # the common case: nothing in flight holds the next id
            self._next_seq = seq + 1 if seq < SEQ_MAX else SEQ_MIN
            in_flight.add(seq)
            return seq
        for _ in range(SEQ_SPAN):
            following = seq + 1 if seq < SEQ_MAX else SEQ_MIN
            if seq not in in_flight:
                self._next_seq = following
                in_flight.add(seq)
                return seq
            seq = following
        raise MpistageError(f"{SEQ_SPAN} requests are in flight: wait for some before starting more")

    def _start(self, shard: int, op: Op, fields: list[bytes], payload: Sequence[np.ndarray],
               one_part_reply: bool) -> PendingReply:
        if self.closed:
            raise ServerUnreachableError("this process has already said goodbye to the servers")
        nparts = len(payload)
        nbytes = payload[0].nbytes if nparts == 1 else sum(int(p.nbytes) for p in payload)
        path = payload_path(nparts, nbytes, inline=True, slot_bytes=self.slot_bytes)
        flags = path.value
        if path is PayloadPath.INLINE:
            fields = [*fields, payload[0].tobytes()]
        elif path is PayloadPath.ONE_SIDED:
            self._window_put(shard, payload)
        elif one_part_reply and not nparts:  # the server may answer inline, or one-sided
            flags = FLAG_INLINE | (FLAG_RMA if self.slot_bytes else 0)
        if len(fields) > MAX_FIELDS:
            raise BadArgumentError(f"a request of {len(fields)} fields is more than the limit {MAX_FIELDS}")
        seq = self._take_seq()
        inter = self.link.inter
        try:
            message = pack_message(REQUEST_MAGIC, op, seq, fields, nbytes, flags)
            if len(message) > MAX_HEADER_BYTES:
                raise BadArgumentError(f"a request of {len(message)} bytes (header and fields) is more than "
                                       f"the limit {MAX_HEADER_BYTES}")
            inter.Send(message, shard, TAG_REQUEST)
            if path is PayloadPath.POINT_TO_POINT:
                tag, limit = payload_tag(seq), self._chunk
                for part in payload:
                    if part.nbytes <= limit:
                        if part.nbytes:
                            inter.Send(part, shard, tag)
                        continue
                    flat = part.reshape(-1).view(np.uint8)
                    for off, size in chunks(flat.nbytes, limit):
                        inter.Send(flat[off:off + size], shard, tag)
        except BaseException:
            self._in_flight.discard(seq)
            raise
        return PendingReply(shard, seq)

    def _reply(self, pending: PendingReply) -> tuple[Header, list[memoryview]]:
        """Receive the reply header; raises the typed error for a non-OK status (the seq is then
        free again: an error reply has no payload)."""
        status = self._status
        msg = self.link.inter.Mprobe(pending.shard, pending.seq, status)
        n = status.Get_count(self._byte)
        buf = self._buffer[:n] if n <= RECEIVE_BUFFER_BYTES else np.empty(n, np.uint8)
        msg.Recv(buf)
        try:
            header, fields = unpack_message(buf, REPLY_MAGIC)
        except ProtocolError:
            self._in_flight.discard(pending.seq)
            raise
        if header.code:  # not Status.OK
            self._in_flight.discard(pending.seq)
            text = bytes(fields[0]).decode(errors="replace") if fields else "no message"
            raise error_for_status(header.code, text)
        return header, fields

    def _finish(self, pending: PendingReply, read: Read[R] | None) -> R | None:
        header, fields = self._reply(pending)
        try:
            if header.payload_nbytes and not header.flags & (FLAG_INLINE | FLAG_RMA):
                self._received = 0
                self._drain(pending, header)
                raise ProtocolError(f"an unexpected {header.payload_nbytes}-byte payload came with the reply")
            return read(fields) if read is not None else None
        finally:
            self._in_flight.discard(pending.seq)

    def _receive_payload(self, pending: PendingReply, header: Header, fields: list[memoryview],
                         targets: list[np.ndarray]) -> None:
        """Receive the reply's payload parts into ``targets`` (contiguous uint8 views of the
        announced sizes); ``fields`` are the reply's, whose last one is the payload when inline."""
        if header.flags & FLAG_INLINE:
            if len(targets) != 1 or not fields or targets[0].nbytes != header.payload_nbytes:
                raise ProtocolError("an inline reply payload needs exactly one part of the announced size")
            targets[0][...] = np.frombuffer(fields[-1], np.uint8)
            return
        parts = [t for t in targets if t.nbytes]
        if sum(t.nbytes for t in parts) != header.payload_nbytes:
            raise ProtocolError("reply payload size does not match its descriptors")
        if header.flags & FLAG_RMA:
            self._window_get(pending.shard, parts)
            return
        inter, status, byte = self.link.inter, self._status, self._byte
        for t in parts:  # a part may arrive as several messages (over MPI's count limit)
            off, n = 0, t.nbytes
            while off < n:
                inter.Recv(t[off:off + MAX_MESSAGE_BYTES] if off or n > MAX_MESSAGE_BYTES else t,
                           pending.shard, pending.seq, status)
                got = status.Get_count(byte)
                if not got:
                    raise ProtocolError("an empty message in a reply payload")
                off += got
                self._received += got

    def _drain(self, pending: PendingReply, header: Header) -> None:
        """Receive and drop what is left of a point-to-point reply payload, so that nothing stays
        queued under the reply's tag and the server's send completes."""
        if header.flags & (FLAG_INLINE | FLAG_RMA):
            return  # nothing travels after the header
        left = header.payload_nbytes - self._received
        inter, status = self.link.inter, self._status
        while left > 0:
            msg = inter.Mprobe(pending.shard, pending.seq, status)
            n = status.Get_count(self._byte)
            msg.Recv(np.empty(n, np.uint8))
            left -= n

    # ------------------------------------------------------------ one-sided
    def _window_put(self, shard: int, parts: Sequence[np.ndarray]) -> None:
        win, off, MPI = self.link.window, self.rank * self.slot_bytes, self._MPI
        win.Lock(shard, MPI.LOCK_SHARED)
        for p in parts:
            if p.nbytes:
                win.Put(p, shard, (off, p.nbytes, MPI.BYTE))
                off += p.nbytes
        win.Unlock(shard)

    def _window_get(self, shard: int, parts: list[np.ndarray]) -> None:
        win, off, MPI = self.link.window, self.rank * self.slot_bytes, self._MPI
        win.Lock(shard, MPI.LOCK_SHARED)
        for p in parts:
            win.Get(p, shard, (off, p.nbytes, MPI.BYTE))
            off += p.nbytes
        win.Unlock(shard)

    # ------------------------------------------------------------ goodbye
    def close(self) -> None:
        """Say goodbye to every shard, then release the link (collective over this job)."""
        with self.lock:
            if self.closed:
                return
            for shard in range(self.nshards):
                self.request(shard, Op.BYE, [])
            self.closed = True
            release(self.link)
