"""The wire layouts and the key hash against the test vectors in docs/protocol.md."""

import numpy as np
import pytest

from mpistage.protocol import (
    HEADER_SIZE,
    ORDER_F,
    REPLY_MAGIC,
    REQUEST_MAGIC,
    Op,
    TensorDesc,
    WireError,
    describe,
    pack_message,
    pack_metadata,
    unpack_message,
    unpack_metadata,
)
from mpistage.router import crc16, hash_slot, shard_of

VECTORS = [  # key, crc16 (None: hash tag), slot, shard of 2, shard of 3
    ("123456789", 0x31C3, 12739, 1, 2),
    ("foo", 0xAF96, 12182, 1, 2),
    ("bar", 0x93C5, 5061, 0, 0),
    ("hello", 0xC362, 866, 0, 0),
    ("{user1000}.following", None, 3443, 0, 0),
    ("{user1000}.followers", None, 3443, 0, 0),
    ("foo{}{bar}", 0xE0AB, 8363, 1, 1),
    ("foo{{bar}}zap", None, 4015, 0, 0),
]


@pytest.mark.parametrize("key,crc,slot,of2,of3", VECTORS)
def test_key_hash_vectors(key, crc, slot, of2, of3):
    if crc is not None:
        assert crc16(key.encode()) == crc
    assert hash_slot(key) == slot
    assert shard_of(key, 2) == of2 and shard_of(key, 3) == of3
    assert shard_of(key, 1) == 0


def test_put_tensor_message_vector():
    desc, _ = describe(np.zeros(2))
    msg = pack_message(REQUEST_MAGIC, Op.PUT_TENSOR, 16, [b"x", desc.pack()], 16)
    assert msg.hex() == ("4d50535101000a00100000000000000002000000000000001000000000000000"
                         "01000000780c000000020001000200000000000000")
    reply = pack_message(REPLY_MAGIC, 0, 16, [])
    assert reply.hex() == "4d505352010000001000000000000000" + "00" * 16
    header, fields = unpack_message(msg, REQUEST_MAGIC)
    assert (header.code, header.seq, header.payload_nbytes) == (Op.PUT_TENSOR, 16, 16)
    assert [bytes(f) for f in fields] == [b"x", desc.pack()]


def test_descriptor_roundtrip_keeps_order():
    f = np.asfortranarray(np.arange(6, dtype=np.int16).reshape(2, 3))
    desc, arr = describe(f)
    assert desc.order == ORDER_F and arr is f
    back = TensorDesc.unpack(desc.pack())
    assert back == desc
    assert np.array_equal(back.view(f.reshape(-1, order="F").view(np.uint8)), f)


def test_big_endian_and_noncontiguous_are_normalized():
    desc, arr = describe(np.arange(4, dtype=">i4")[::2])
    assert desc.dtype == np.dtype("<i4") and arr.flags.c_contiguous and list(arr) == [0, 2]


@pytest.mark.parametrize("bad", [
    b"", b"MPSQ" + bytes(10), b"XXXX" + bytes(28),
    pack_message(REQUEST_MAGIC, 1, 16, [b"abc"])[:-1],
    pack_message(REQUEST_MAGIC, 1, 16, [b"abc"]) + b"!",
])
def test_malformed_messages_raise(bad):
    with pytest.raises(WireError):
        unpack_message(bad, REQUEST_MAGIC)


def test_header_is_32_bytes():
    assert HEADER_SIZE == 32


def test_metadata_roundtrip_and_garbage():
    scalars = {"t": np.array([1.5, 2.5]), "n": np.array([3], np.int32)}
    strings = {"units": ["m", "s"], "empty": []}
    s2, t2 = unpack_metadata(pack_metadata(scalars, strings))
    assert t2 == strings and all(np.array_equal(s2[k], v) and s2[k].dtype == v.dtype for k, v in scalars.items())
    with pytest.raises(WireError):
        unpack_metadata(b"\x05\x00\x00\x00garbage")


def test_unsupported_dtype_is_a_type_error():
    with pytest.raises(TypeError, match="not supported"):
        describe(np.zeros(2, np.complex128))
