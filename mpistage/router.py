"""Key -> shard routing: Redis Cluster's CRC16 hash slots, with ``{hash tags}``.

The same function is written in Fortran (``fortran/``); ``docs/protocol.md`` lists test vectors
that both languages' tests check.
"""

from __future__ import annotations

import functools

HASH_SLOTS = 16384


def _crc16_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


_TABLE = _crc16_table()


def crc16(data: bytes) -> int:
    """CRC-16/XMODEM (polynomial 0x1021, initial value 0), as Redis Cluster uses."""
    crc = 0
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ _TABLE[((crc >> 8) ^ b) & 0xFF]
    return crc


@functools.lru_cache(maxsize=65536)
def hash_slot(key: str | bytes) -> int:
    """The hash slot (0..16383) of a key; only the text inside the first non-empty
    ``{...}`` counts, so ``{run1}.u`` and ``{run1}.v`` share a slot."""
    raw = key.encode("utf-8") if isinstance(key, str) else key
    start = raw.find(b"{")
    if start >= 0:
        end = raw.find(b"}", start + 1)
        if end > start + 1:
            raw = raw[start + 1:end]
    return crc16(raw) % HASH_SLOTS


def shard_of(key: str | bytes, nshards: int) -> int:
    """The shard that owns ``key``: slots are split into ``nshards`` contiguous ranges."""
    return hash_slot(key) * nshards // HASH_SLOTS
