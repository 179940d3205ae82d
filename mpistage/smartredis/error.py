"""SmartRedis's exception names (``smartredis.error``), each one a class of mpistage's hierarchy
(:mod:`mpistage.errors`): ``except RedisReplyError`` catches every error a request's reply can
carry, ``except MpistageError`` catches all of them."""

from ..errors import (
    BadArgumentError,
    DatabaseError,
    KeyNotFoundError,
    MpistageError,
    ProtocolError,
    ReplyError,
    ReplyTimeoutError,
    ServerRuntimeError,
    ServerUnreachableError,
    StoreFullError,
)

#: The servers cannot be found or reached (SSDB unset, no connection file, connect failed).
RedisConnectionError = ServerUnreachableError
#: A request was refused; the base of the classes below.
RedisReplyError = ReplyError
#: A run failed on the server (the model or script raised).
RedisRuntimeError = ServerRuntimeError
#: A shard's memory cap (``--max-memory``) would be exceeded.
RedisBadAllocError = StoreFullError
#: A shard could not carry out a request for a reason of its own.
RedisDatabaseError = DatabaseError
#: A message did not follow the wire protocol.
RedisInternalError = ProtocolError
#: A wait for the servers ran out of time.
RedisTimeoutError = ReplyTimeoutError
#: The tensor, dataset, list, model or script does not exist.
RedisKeyError = KeyNotFoundError

__all__ = [
    "RedisConnectionError", "RedisReplyError", "RedisRuntimeError", "RedisBadAllocError",
    "RedisDatabaseError", "RedisInternalError", "RedisTimeoutError", "RedisKeyError",
    "BadArgumentError", "MpistageError",
]
