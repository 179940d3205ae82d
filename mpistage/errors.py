"""The exception hierarchy: one base class, one subclass per reply status, and the status codes
themselves (re-exported by :mod:`mpistage.protocol`, which raises :class:`ProtocolError` for a
buffer that does not follow the layout). Imports nothing from mpistage.

The tree follows SmartRedis's (``mpistage.smartredis.error`` names each class with SmartRedis's
name)::

    MpistageError (RuntimeError)
    ├── ServerUnreachableError            RedisConnectionError
    └── ReplyError                        RedisReplyError
        ├── KeyNotFoundError (KeyError)   RedisKeyError
        ├── StoreFullError                RedisBadAllocError
        ├── ServerRuntimeError            RedisRuntimeError
        ├── ProtocolError                 RedisInternalError
        │   └── UnknownOperationError
        ├── BadArgumentError (ValueError)
        │   └── UnknownChoiceError (TypeError)
        ├── DatabaseError                 RedisDatabaseError
        └── ReplyTimeoutError (TimeoutError)  RedisTimeoutError
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any


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


class ReplyError(MpistageError):
    """A request was refused: the servers (or the backend) answered it with an error."""


class KeyNotFoundError(ReplyError, KeyError):
    """The tensor, dataset, list, model or script does not exist."""

    status = Status.NOT_FOUND

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class StoreFullError(ReplyError):
    """The shard's ``--max-memory`` would be exceeded; nothing already stored was touched."""

    status = Status.STORE_FULL


class ProtocolError(ReplyError):
    """A message did not follow the wire protocol (see docs/protocol.md); ``protocol.WireError``
    is this class."""

    status = Status.PROTOCOL_ERROR


class BadArgumentError(ReplyError, ValueError):
    """A request was well formed but its arguments are wrong (dtype, shape, count...)."""

    status = Status.BAD_ARGUMENT


class UnknownChoiceError(BadArgumentError, TypeError):
    """An argument names a device or model backend that does not exist: a BadArgumentError and,
    as SmartRedis raises for it, a TypeError."""


class UnknownOperationError(ProtocolError):
    """The server does not know the requested operation."""

    status = Status.UNKNOWN_OP


class ServerRuntimeError(ReplyError):
    """Running a model or script on the server failed; the message says why."""

    status = Status.RUNTIME_ERROR


class ServerUnreachableError(MpistageError):
    """The servers could not be found or reached."""


class DatabaseError(ReplyError):
    """A shard could not carry out a request for a reason of its own (SmartRedis's
    RedisDatabaseError; mpistage's servers report their failures with the classes above)."""


class ReplyTimeoutError(ReplyError, TimeoutError):
    """A wait for the servers ran out of time (SmartRedis's RedisTimeoutError)."""


def typecheck(value: Any, name: str, types: type | tuple[type, ...]) -> None:
    """Raise TypeError, as SmartRedis does, when ``value`` (the argument ``name``) is not an
    instance of ``types``."""
    if not isinstance(value, types):
        wanted = " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
        raise TypeError(f"argument {name} must be {wanted}, not {type(value).__name__}")


_BY_STATUS: dict[int, type[MpistageError]] = {
    cls.status: cls
    for cls in (KeyNotFoundError, StoreFullError, ProtocolError, BadArgumentError,
                UnknownOperationError, ServerRuntimeError, MpistageError)
}


def error_for_status(status: int, message: str) -> MpistageError:
    """The exception a client raises for a non-zero reply status."""
    return _BY_STATUS.get(status, MpistageError)(message)
