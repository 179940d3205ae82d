"""Requests from one server rank to another over the peer communicator (rank = shard): the same
messages a client sends (docs/protocol.md), framed by the same payload choice
(:func:`~mpistage._mpi.framing.payload_path`; a peer link has no window), the reply on the
request's seq tag. The engine's mover thread uses it to fetch inputs and store outputs that live
on other shards; each shard's loop serves the peer communicator like a client job."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .._mpi.framing import PayloadPath, payload_path
from ..backoff import Backoff
from ..errors import ProtocolError, ServerRuntimeError, error_for_status
from ..mpienv import mpi
from ..protocol import (
    FLAG_INLINE,
    REPLY_MAGIC,
    REQUEST_MAGIC,
    SEQ_MAX,
    SEQ_MIN,
    TAG_REQUEST,
    Op,
    Status,
    TensorDesc,
    chunks,
    message_limit,
    pack_message,
    payload_tag,
    unpack_message,
)
from .store import StoredTensor


class PeerClient:
    """One request in flight at a time (a lock serializes callers)."""

    def __init__(self, comm: Any, timeout: float, stopping: Callable[[], bool]) -> None:
        self.MPI = mpi()
        self.comm = comm
        self.timeout = timeout
        self.stopping = stopping
        self.lock = threading.Lock()
        self._seqs = itertools.cycle(range(SEQ_MIN, SEQ_MAX + 1))
        self._status = self.MPI.Status()
        self._chunk = message_limit()

    def request(self, shard: int, op: Op, fields: list[bytes], payload: Sequence[np.ndarray] = (),
                one_part_reply: bool = False) -> tuple[list[memoryview], list[np.ndarray]]:
        """Send a request to ``shard`` and wait for its reply: (fields, payload parts). Raises the
        typed error of a non-OK reply, or ServerRuntimeError when the shard does not answer."""
        with self.lock:
            seq = next(self._seqs)
            nbytes = sum(int(p.nbytes) for p in payload)
            path = payload_path(len(payload), nbytes, inline=True, slot_bytes=0)
            flags = FLAG_INLINE if one_part_reply else 0
            if path is PayloadPath.INLINE:
                fields, payload, flags = [*fields, payload[0].tobytes()], (), path.flag
            head = pack_message(REQUEST_MAGIC, op, seq, fields, nbytes, flags)
            self.comm.Send(np.frombuffer(head, np.uint8), shard, TAG_REQUEST)
            for part in payload:
                flat = part.reshape(-1).view(np.uint8)
                for off, size in chunks(flat.nbytes, self._chunk):
                    self.comm.Send(flat[off:off + size], shard, payload_tag(seq))
            header, rfields = unpack_message(self._receive(shard, seq), REPLY_MAGIC)
            if header.code != Status.OK:
                text = bytes(rfields[0]).decode(errors="replace") if rfields else "no message"
                raise error_for_status(header.code, f"shard {shard}: {text}")
            if header.flags & FLAG_INLINE:
                return rfields[:-1], [np.frombuffer(rfields[-1], np.uint8)]
            parts, got = [], 0
            while got < header.payload_nbytes:
                parts.append(self._receive(shard, seq))
                got += parts[-1].nbytes
            return rfields, parts

    def _receive(self, shard: int, seq: int) -> np.ndarray:
        status = self._status
        deadline = time.monotonic() + self.timeout
        backoff = Backoff()
        while True:
            msg = self.comm.Improbe(shard, seq, status)
            if msg is not None:
                buf = np.empty(status.Get_count(self.MPI.BYTE), np.uint8)
                msg.Recv(buf)
                return buf
            if self.stopping() or time.monotonic() > deadline:
                raise ServerRuntimeError(f"shard {shard} did not answer a transfer within {self.timeout} s")
            backoff.pause()

    def get_tensor(self, shard: int, key: str) -> StoredTensor:
        fields, parts = self.request(shard, Op.GET_TENSOR, [key.encode()], one_part_reply=True)
        desc = TensorDesc.unpack(fields[0])
        data = parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else np.empty(0, np.uint8)
        if data.nbytes != desc.nbytes:
            raise ProtocolError(f"shard {shard} sent {data.nbytes} bytes for {key!r}, expected {desc.nbytes}")
        return StoredTensor(desc, data)

    def put_tensor(self, shard: int, key: str, tensor: StoredTensor) -> None:
        self.request(shard, Op.PUT_TENSOR, [key.encode(), tensor.desc.pack()],
                     [tensor.data] if tensor.nbytes else [])
