"""The exception hierarchy: one base class, one subclass per reply status."""

from __future__ import annotations

from .protocol import Status


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
    """A message did not follow the wire protocol (see docs/protocol.md)."""

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
