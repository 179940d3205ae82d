"""The wire layouts and the key hash against docs/protocol_vectors.json (the test vectors of
docs/protocol.md; the Fortran client checks the same file in tests/test_fortran.py)."""

import json
from pathlib import Path

import numpy as np
import pytest

from mpistage.protocol import (
    HEADER_SIZE,
    ORDER_F,
    REQUEST_MAGIC,
    TensorDesc,
    WireError,
    describe,
    pack_message,
    pack_metadata,
    unpack_message,
    unpack_metadata,
)
from mpistage.router import crc16, hash_slot, shard_of

VECTORS = json.loads((Path(__file__).resolve().parent.parent / "docs" / "protocol_vectors.json").read_text())


def unhex(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def names(group: str) -> list[str]:
    return [v.get("name", v.get("key")) for v in VECTORS[group]]


@pytest.mark.parametrize("v", VECTORS["routing"], ids=names("routing"))
def test_key_hash_vectors(v):
    if v["crc16"] is not None:
        assert crc16(v["key"].encode()) == int(v["crc16"], 16)
    assert hash_slot(v["key"]) == v["slot"]
    assert {n: shard_of(v["key"], int(n)) for n in v["shard_of"]} == v["shard_of"]


@pytest.mark.parametrize("v", VECTORS["messages"], ids=names("messages"))
def test_message_vectors(v):
    magic, fields = v["magic"].encode(), [unhex(f) for f in v["fields"]]
    msg = pack_message(magic, v["code"], v["seq"], fields, v["payload_bytes"], v["flags"])
    assert msg == unhex(v["hex"])
    header, got = unpack_message(msg, magic)
    assert (header.code, header.seq, header.flags, header.payload_nbytes) == (
        v["code"], v["seq"], v["flags"], v["payload_bytes"])
    assert [bytes(f) for f in got] == fields


def test_protocol_doc_example_is_the_first_message_vector():
    doc = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()
    example = doc[doc.index("## 5. Test vectors"):].split("```")[1]
    assert unhex(" ".join(example.split())) == unhex(VECTORS["messages"][0]["hex"])


@pytest.mark.parametrize("v", VECTORS["descriptors"], ids=names("descriptors"))
def test_descriptor_vectors(v):
    desc = TensorDesc(np.dtype(v["dtype"]), tuple(v["shape"]), v["order"])
    assert desc.pack() == unhex(v["hex"])
    assert TensorDesc.unpack(unhex(v["hex"])) == desc


@pytest.mark.parametrize("v", VECTORS["metadata"], ids=names("metadata"))
def test_metadata_vectors(v):
    scalars = {k: np.array(s["values"], dtype=s["dtype"]) for k, s in v["scalars"].items()}
    assert pack_metadata(scalars, v["strings"]) == unhex(v["hex"])
    got_scalars, got_strings = unpack_metadata(unhex(v["hex"]))
    assert got_strings == v["strings"]
    assert list(got_scalars) == list(scalars)
    assert all(np.array_equal(got_scalars[k], a) and got_scalars[k].dtype == a.dtype for k, a in scalars.items())


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
