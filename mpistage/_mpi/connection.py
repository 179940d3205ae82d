"""The client's side of the wire: one :class:`ServerConnection` per process, shared by every
``Client`` in it. Sends a request (header, then payload by point-to-point or through the shard's
one-sided window), and receives the reply tagged with the request's ``seq``."""

from __future__ import annotations

import itertools
import threading
from typing import Any, NamedTuple

import numpy as np

from ..errors import ProtocolError, ServerUnreachableError, error_for_status
from ..mpienv import mpi
from ..protocol import (
    FLAG_INLINE,
    FLAG_RMA,
    INLINE_MAX_BYTES,
    REPLY_MAGIC,
    REQUEST_MAGIC,
    RMA_MIN_BYTES,
    SEQ_MAX,
    SEQ_MIN,
    TAG_PAYLOAD,
    TAG_REQUEST,
    Header,
    Op,
    pack_message,
    unpack_message,
)
from .links import Link, release


class PendingReply(NamedTuple):
    """A sent request whose reply has not been read yet (see ``ServerConnection.start``)."""

    shard: int
    seq: int


class ServerConnection:
    """The link from this process to every shard; thread-safe (requests are serialized)."""

    def __init__(self, link: Link, app_comm: Any) -> None:
        self.MPI = mpi()
        self.link = link
        self.app_comm = app_comm
        self.nshards = link.inter.Get_remote_size()
        self.rank = link.inter.Get_rank()
        self.rma = link.kind.crosses_jobs and link.slot_bytes > 0
        self.lock = threading.RLock()
        self._seqs = itertools.cycle(range(SEQ_MIN, SEQ_MAX + 1))
        self.closed = False
        self._byte = self.MPI.BYTE

    # ------------------------------------------------------------ requests
    def _use_rma(self, payload: list[np.ndarray]) -> bool:
        return (self.rma and len(payload) == 1
                and RMA_MIN_BYTES <= payload[0].nbytes <= self.link.slot_bytes)

    def start(self, shard: int, op: Op, fields: list[bytes],
              payload: list[np.ndarray] = (), one_part_reply: bool = False) -> PendingReply:
        """Send a request; the reply is read later with :meth:`finish`. A single small payload part
        travels inline, a single large one through the window (connect mode); with
        ``one_part_reply`` the server may answer the same way."""
        if self.closed:
            raise ServerUnreachableError("this process has already said goodbye to the servers")
        inter = self.link.inter
        nbytes = payload[0].nbytes if len(payload) == 1 else sum(int(p.nbytes) for p in payload)
        flags = FLAG_INLINE if one_part_reply else 0
        with self.lock:
            seq = next(self._seqs)
            if len(payload) == 1 and 0 < nbytes <= INLINE_MAX_BYTES:
                fields = [*fields, payload[0].tobytes()]
                payload, flags = [], FLAG_INLINE
            elif self._use_rma(payload):
                self._window_put(shard, payload)
                payload, flags = [], FLAG_RMA
            elif one_part_reply and self.rma:
                flags |= FLAG_RMA
            head = pack_message(REQUEST_MAGIC, op, seq, fields, nbytes, flags)
            inter.Send(head, shard, TAG_REQUEST)
            for part in payload:
                if part.nbytes:
                    inter.Send(part, shard, TAG_PAYLOAD)
        return PendingReply(shard, seq)

    def finish(self, pending: PendingReply) -> tuple[Header, list[memoryview]]:
        """Receive the reply header; raises the typed error for a non-OK status. The caller then
        reads any payload with :meth:`receive_payload`."""
        inter, status = self.link.inter, self.MPI.Status()
        msg = inter.Mprobe(pending.shard, pending.seq, status)
        buf = np.empty(status.Get_count(self._byte), np.uint8)
        msg.Recv(buf)
        header, fields = unpack_message(buf, REPLY_MAGIC)
        if header.code:  # not Status.OK
            text = bytes(fields[0]).decode(errors="replace") if fields else "no message"
            raise error_for_status(header.code, text)
        return header, fields

    def test(self, pending: PendingReply) -> bool:
        """True when the reply to ``pending`` has arrived (:meth:`finish` will not wait)."""
        return bool(self.link.inter.Iprobe(pending.shard, pending.seq))

    def receive_payload(self, pending: PendingReply, header: Header, fields: list[memoryview],
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
        for t in parts:
            self.link.inter.Recv(t, pending.shard, pending.seq)

    def request(self, shard: int, op: Op, fields: list[bytes],
                payload: list[np.ndarray] = ()) -> list[memoryview]:
        """A request without a reply payload: send, wait, return the reply's fields."""
        return self.finish(self.start(shard, op, fields, payload))[1]

    # ------------------------------------------------------------ one-sided
    def _slot(self) -> int:
        return self.rank * self.link.slot_bytes

    def _window_put(self, shard: int, parts: list[np.ndarray]) -> None:
        win, off = self.link.window, self._slot()
        win.Lock(shard, self.MPI.LOCK_SHARED)
        for p in parts:
            if p.nbytes:
                win.Put(p, shard, (off, p.nbytes, self.MPI.BYTE))
                off += p.nbytes
        win.Unlock(shard)

    def _window_get(self, shard: int, parts: list[np.ndarray]) -> None:
        win, off = self.link.window, self._slot()
        win.Lock(shard, self.MPI.LOCK_SHARED)
        for p in parts:
            win.Get(p, shard, (off, p.nbytes, self.MPI.BYTE))
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
