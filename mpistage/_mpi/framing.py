"""How a message's payload travels: the one choice made by the client for its requests, by the
server loop for its replies, and between server ranks (docs/protocol.md, "Payloads").

* inline: a single small part rides inside the request/reply message as its last field;
* one-sided: a single large part goes through the receiver's slot of the link's window (links
  that cross jobs only; the slot size is fixed at session setup, 0 = no window);
* point-to-point: otherwise, one message per part after the header.
"""

from __future__ import annotations

import enum

from ..protocol import FLAG_INLINE, FLAG_RMA, INLINE_MAX_BYTES, RMA_MIN_BYTES


class PayloadPath(enum.Enum):
    INLINE = FLAG_INLINE
    ONE_SIDED = FLAG_RMA
    POINT_TO_POINT = 0

    @property
    def flag(self) -> int:
        """The header flag that announces this path."""
        return self.value


def payload_path(nparts: int, nbytes: int, *, inline: bool, slot_bytes: int) -> PayloadPath:
    """The path for ``nparts`` parts of ``nbytes`` in all, when the receiver takes inline
    payloads (``inline``) and has a window slot of ``slot_bytes`` for this sender (0: none)."""
    if nparts == 1:
        if inline and 0 < nbytes <= INLINE_MAX_BYTES:
            return PayloadPath.INLINE
        if slot_bytes and RMA_MIN_BYTES <= nbytes <= slot_bytes:
            return PayloadPath.ONE_SIDED
    return PayloadPath.POINT_TO_POINT
