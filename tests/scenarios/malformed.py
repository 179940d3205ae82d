"""Raw malformed requests over MPI, and bad input through the API: each gets a clear error and
the server goes on serving. Run with one shard started with --max-memory 1M --payload-timeout 1."""

import numpy as np

import mpistage
from mpistage import Client
from mpistage._mpi.process import get_connection
from mpistage.protocol import (
    HEADER,
    REPLY_MAGIC,
    REQUEST_MAGIC,
    TAG_REQUEST,
    Op,
    Status,
    TensorDesc,
    pack_message,
    payload_tag,
    unpack_message,
)

c = Client()
conn = get_connection()
inter = conn.link.inter
MPI = mpistage.mpienv.mpi()


def raw(message: bytes, seq: int, payload: list[bytes] = ()) -> tuple[int, str]:
    """Send raw bytes as a request to shard 0; return the reply's status and message."""
    inter.Send(np.frombuffer(message, np.uint8), 0, TAG_REQUEST)
    for part in payload:
        inter.Send(np.frombuffer(part, np.uint8), 0, payload_tag(seq))
    status = MPI.Status()
    msg = inter.Mprobe(0, seq, status)
    buf = np.empty(status.Get_count(MPI.BYTE), np.uint8)
    msg.Recv(buf)
    header, fields = unpack_message(buf, REPLY_MAGIC)
    return header.code, bytes(fields[0]).decode() if fields else ""


def alive() -> None:
    x = np.arange(5.0)
    c.put_tensor("alive", x)
    assert np.array_equal(c.get_tensor("alive"), x)


f64 = TensorDesc(np.dtype("float64"), (4,)).pack()
cases = {
    "bad magic": (b"XXXX" + pack_message(REQUEST_MAGIC, Op.INFO, 100, [])[4:], [], Status.PROTOCOL_ERROR),
    "bad version": (HEADER.pack(REQUEST_MAGIC, 99, Op.INFO, 101, 0, 0, 0, 0), [], Status.PROTOCOL_ERROR),
    "truncated fields": (pack_message(REQUEST_MAGIC, Op.GET_TENSOR, 102, [b"alive"])[:-2], [],
                         Status.PROTOCOL_ERROR),
    "field count lies": (HEADER.pack(REQUEST_MAGIC, 1, Op.GET_TENSOR, 103, 0, 5, 0, 0), [],
                         Status.PROTOCOL_ERROR),
    "unknown op": (pack_message(REQUEST_MAGIC, 999, 104, []), [], Status.UNKNOWN_OP),
    "wrong field count": (pack_message(REQUEST_MAGIC, Op.PUT_TENSOR, 105, [b"k"]), [], Status.PROTOCOL_ERROR),
    "over-long key": (pack_message(REQUEST_MAGIC, Op.GET_TENSOR, 106, [b"k" * 5000]), [],
                      Status.PROTOCOL_ERROR),
    "bad dtype code": (pack_message(REQUEST_MAGIC, Op.PUT_TENSOR, 107, [b"k", b"\x63\x00\x01\x00" + bytes(8)], 8),
                       [bytes(8)], Status.PROTOCOL_ERROR),
    "payload smaller than shape": (pack_message(REQUEST_MAGIC, Op.PUT_TENSOR, 108, [b"k", f64], 16),
                                   [bytes(16)], Status.BAD_ARGUMENT),
    "payload never sent": (pack_message(REQUEST_MAGIC, Op.PUT_TENSOR, 109, [b"k", f64], 32), [],
                           Status.PROTOCOL_ERROR),
    "missing key": (pack_message(REQUEST_MAGIC, Op.GET_TENSOR, 110, [b"no-such-key"]), [], Status.NOT_FOUND),
    "bad kind": (pack_message(REQUEST_MAGIC, Op.DELETE, 111, [b"Q", b"alive"]), [], Status.PROTOCOL_ERROR),
}
alive()
for name, (message, payload, expected) in cases.items():
    seq = int.from_bytes(message[8:12], "little")
    code, text = raw(message, seq, payload)
    assert code == expected, f"{name}: status {code} ({text}), expected {expected}"
    assert text, f"{name}: no error message"
    alive()
    print(f"{name}: status {Status(code).name}: {text}", flush=True)

# a message too short to name a reply tag gets no reply; the server must simply go on
inter.Send(np.frombuffer(b"MPS", np.uint8), 0, TAG_REQUEST)
alive()

# the same through the API
for call, exc in [
    (lambda: c.get_tensor("no-such-key"), mpistage.KeyNotFoundError),
    (lambda: c.put_tensor("k", np.zeros(3, np.complex64)), TypeError),
    (lambda: c.put_tensor("k" * 2000, np.zeros(3)), ValueError),
    (lambda: c.put_tensor("", np.zeros(3)), ValueError),
    (lambda: c.put_tensor("k", [1, 2, 3]), TypeError),
]:
    try:
        call()
        raise AssertionError("accepted bad input")
    except exc as e:
        print(f"{type(e).__name__}: {e}", flush=True)
    alive()

# store full: the cap is 1 MiB; what was stored stays intact
keep = np.random.default_rng(0).random(50_000)  # 400 kB
c.put_tensor("keep", keep)
try:
    c.put_tensor("too-big", np.zeros(100_000))  # 800 kB more
    raise AssertionError("store accepted more than --max-memory")
except mpistage.StoreFullError as e:
    print(f"StoreFullError: {e}", flush=True)
assert np.array_equal(c.get_tensor("keep"), keep) and not c.tensor_exists("too-big")
c.put_tensor("keep", keep[:1000])  # replacing frees the old bytes
c.put_tensor("fits-now", np.zeros(100_000))
info = c.get_server_info()[0]
assert info["bytes_used"] <= info["max_bytes"] and info["errors"] >= len(cases)
print("malformed OK", flush=True)
