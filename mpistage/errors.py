"""The exception hierarchy: one base class, one subclass per reply status, and the status codes
themselves (re-exported by :mod:`mpistage.protocol`, which raises :class:`ProtocolError` for a
buffer that does not follow the layout). Imports nothing from mpistage."""

from __future__ import annotations

from enum import IntEnum


class Status(IntEnum):
    """Reply status codes (reply header ``op`` slot)."""

    OK = 0
    NOT_FOUND = 1
    STORE_FULL = 2
    PROTOCOL_ERROR = 3
    BAD_ARGUMENT = 4
    UNKNOWN_OP = 5
    RUNTIME_ERROR = 6
    INTERNAL_ERROR = 7


class MpistageError(RuntimeError):
    """Base class of every error mpistage raises on purpose."""

    status: Status = Status.INTERNAL_ERROR


class KeyNotFoundError(MpistageError, KeyError):
    """The tensor, dataset, list, model or script does not exist."""

    status = Status.NOT_FOUND

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class StoreFullError(MpistageError):
    """The shard's ``--max-memory`` would be exceeded; nothing already stored was touched."""

    status = Status.STORE_FULL


class ProtocolError(MpistageError):
    """A message did not follow the wire protocol (see docs/protocol.md); ``protocol.WireError``
    is this class."""

    status = Status.PROTOCOL_ERROR


class BadArgumentError(MpistageError, ValueError):
    """A request was well formed but its arguments are wrong (dtype, shape, count...)."""

    status = Status.BAD_ARGUMENT


class UnknownOperationError(ProtocolError):
    """The server does not know the requested operation."""

    status = Status.UNKNOWN_OP


class ServerRuntimeError(MpistageError):
    """Running a model or script on the server failed; the message says why."""

    status = Status.RUNTIME_ERROR


class ServerUnreachableError(MpistageError):
    """The servers could not be found or reached."""


_BY_STATUS: dict[int, type[MpistageError]] = {
    cls.status: cls
    for cls in (KeyNotFoundError, StoreFullError, ProtocolError, BadArgumentError,
                UnknownOperationError, ServerRuntimeError, MpistageError)
}


def error_for_status(status: int, message: str) -> MpistageError:
    """The exception a client raises for a non-zero reply status."""
    return _BY_STATUS.get(status, MpistageError)(message)
