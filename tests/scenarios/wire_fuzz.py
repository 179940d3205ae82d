"""Fuzz the servers with mutated raw messages mixed with valid traffic (run with 2 client ranks).

Rank 0 sends ``N`` mutated messages (seeded): requests with flipped bytes, extreme header fields
(seq 2**32-1, unknown flags, lying field counts and payload sizes), truncated or extended bodies,
payload parts missing, extra, of the wrong size or on the wrong tag, stray payloads and random
garbage; after every few it puts a random tensor with a valid raw request (inline or
point-to-point) and reads it back (inline or point-to-point), checking every byte. Rank 1, a
bystander, does put/get round trips through the Client all the while. At the end rank 1 reads
every value rank 0 stored and checks each shard is alive. Prints the figures; exits non-zero on any
wrong value.

Mutated messages never end the session or load code (their op is never BYE, SHUTDOWN, SAVE or an
engine op) and never use seqs 16000..16383, which the valid raw requests use, so that each
reply can be told apart; their replies are drained as they come.

Arguments: N (mutated messages), seed.
"""

import sys
import time
import traceback
import zlib

import numpy as np

import mpistage
from mpistage import Client, app_comm
from mpistage._mpi.process import get_connection
from mpistage.protocol import (
    FLAG_INLINE,
    FLAG_RMA,
    HEADER,
    INLINE_MAX_BYTES,
    REPLY_MAGIC,
    REQUEST_MAGIC,
    SEQ_MAX,
    TAG_REQUEST,
    Op,
    Status,
    TensorDesc,
    pack_message,
    pack_metadata,
    payload_tag,
    unpack_message,
)
from mpistage.router import shard_of

N = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
SEED = int(sys.argv[2]) if len(sys.argv) > 2 else 0
VALID_SEQS = range(16000, SEQ_MAX + 1)
EVERY = 10  # mutated messages between two valid put+get pairs
# the fuzzer's expected values, to the bystander: never comm.irecv, whose buffer is 32 KiB
# (mpi4py.rc.irecv_bufsz); at 50,000 messages the dict is ~94 KB and overran it (heap corruption)
DONE_TAG = 77
EXCLUDED_OPS = {Op.BYE, Op.SHUTDOWN, Op.SAVE, *range(50, 60)}
DTYPES = [np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16]

c = Client()
comm = app_comm()
rank = comm.Get_rank()
assert comm.Get_size() == 2, "run with two client ranks"
MPI = mpistage.mpienv.mpi()
nshards = c.nshards


def fuzzer() -> dict[str, int]:
    inter = get_connection().link.inter
    rng = np.random.default_rng(SEED)
    status = MPI.Status()
    stats = {"mutated": 0, "valid_pairs": 0, "wrong": 0, "drained_replies": 0, "stray_payloads": 0}
    expected: dict[str, int] = {}
    valid_seq = iter(int(s) for _ in range(10**9) for s in VALID_SEQS)

    def send(shard: int, data: bytes | np.ndarray, tag: int) -> None:
        inter.Send(np.frombuffer(bytes(data), np.uint8) if not isinstance(data, np.ndarray) else data, shard, tag)

    def drain() -> None:
        while inter.Iprobe(MPI.ANY_SOURCE, MPI.ANY_TAG, status):
            if status.Get_tag() in VALID_SEQS:
                raise AssertionError(f"an unexpected reply on a valid request's tag {status.Get_tag()}")
            msg = inter.Mprobe(status.Get_source(), status.Get_tag(), status)
            msg.Recv(np.empty(status.Get_count(MPI.BYTE), np.uint8))
            stats["drained_replies"] += 1

    def reply(shard: int, seq: int) -> tuple[int, list[memoryview], list[np.ndarray]]:
        msg = inter.Mprobe(shard, seq, status)
        buf = np.empty(status.Get_count(MPI.BYTE), np.uint8)
        msg.Recv(buf)
        header, fields = unpack_message(buf, REPLY_MAGIC)
        parts = []
        if header.payload_nbytes and not header.flags & FLAG_INLINE:
            got = 0
            while got < header.payload_nbytes:
                m = inter.Mprobe(shard, seq, status)
                p = np.empty(status.Get_count(MPI.BYTE), np.uint8)
                m.Recv(p)
                parts.append(p)
                got += p.nbytes
        elif header.payload_nbytes:
            parts.append(np.frombuffer(fields.pop(), np.uint8))
        return header.code, fields, parts

    def random_array() -> np.ndarray:
        dt = DTYPES[rng.integers(len(DTYPES))]
        n = int(rng.choice([0, 1, 3, 100, 700, 5000, 20000]))
        a = rng.integers(0, 255, n * np.dtype(dt).itemsize, dtype=np.uint8).view(dt)
        return a.reshape(-1, 1) if n and rng.random() < 0.3 else a

    def valid_pair(i: int) -> None:
        key = f"ok.{SEED}.{i}"
        shard = shard_of(key, nshards)
        arr = np.ascontiguousarray(random_array())
        raw = arr.reshape(-1).view(np.uint8) if arr.size else np.empty(0, np.uint8)
        desc = TensorDesc(arr.dtype, arr.shape).pack()
        seq = next(valid_seq)
        inline = 0 < raw.nbytes <= INLINE_MAX_BYTES and rng.random() < 0.5
        fields = [key.encode(), desc] + ([raw.tobytes()] if inline else [])
        send(shard, pack_message(REQUEST_MAGIC, Op.PUT_TENSOR, seq, fields, raw.nbytes,
                                 FLAG_INLINE if inline else 0), TAG_REQUEST)
        if raw.nbytes and not inline:
            send(shard, raw, payload_tag(seq))
        code, f, _ = reply(shard, seq)
        if code != Status.OK:
            stats["wrong"] += 1
            print(f"fuzz: valid put {key} got status {code}: {bytes(f[0]) if f else b''}", flush=True)
            return
        seq = next(valid_seq)
        send(shard, pack_message(REQUEST_MAGIC, Op.GET_TENSOR, seq, [key.encode()], 0,
                                 FLAG_INLINE if rng.random() < 0.5 else 0), TAG_REQUEST)
        code, f, parts = reply(shard, seq)
        got = b"".join(p.tobytes() for p in parts)
        if code != Status.OK or bytes(f[0]) != desc or got != raw.tobytes():
            stats["wrong"] += 1
            print(f"fuzz: valid get {key} returned status {code} and {len(got)} bytes, put {raw.nbytes}", flush=True)
            return
        expected[key] = zlib.crc32(raw.tobytes()) ^ zlib.crc32(desc)
        stats["valid_pairs"] += 1

    def base(i: int) -> tuple[bytes, list[np.ndarray]]:
        """A valid request (of the fuzzer's own fz.* keys) and its payload parts."""
        key = f"fz.{i % 50}".encode()
        kind = rng.integers(9)
        seq = int(rng.integers(16, 16000))
        if kind <= 2:
            arr = random_array()
            raw = np.ascontiguousarray(arr).reshape(-1).view(np.uint8) if arr.size else np.empty(0, np.uint8)
            return pack_message(REQUEST_MAGIC, Op.PUT_TENSOR, seq, [key, TensorDesc(arr.dtype, arr.shape).pack()],
                                raw.nbytes), [raw] if raw.nbytes else []
        if kind == 3:
            a, b = random_array(), random_array()
            meta = pack_metadata({"s": np.arange(3.0)}, {"t": ["x", "yz"]})
            parts = [np.ascontiguousarray(x).reshape(-1).view(np.uint8) for x in (a, b) if x.size]
            fields = [key, meta, b"a", TensorDesc(a.dtype, a.shape).pack(), b"b", TensorDesc(b.dtype, b.shape).pack()]
            return pack_message(REQUEST_MAGIC, Op.PUT_DATASET, seq, fields, sum(p.nbytes for p in parts)), parts
        simple = [
            (Op.GET_TENSOR, [key]), (Op.LIST_APPEND, [b"fz.list", key]), (Op.EXISTS, [b"T", key]),
            (Op.LIST_RANGE, [b"fz.list", (0).to_bytes(8, "little"), (-1).to_bytes(8, "little", signed=True)]),
            (Op.DELETE, [b"T", key]), (Op.COPY, [b"T", key, key + b".c"]), (Op.GET_DATASET, [key]),
        ]
        op, fields = simple[kind - 4] if kind - 4 < len(simple) else (Op.INFO, [])
        return pack_message(REQUEST_MAGIC, op, seq, fields, 0, FLAG_INLINE if rng.random() < 0.3 else 0), []

    def pick(values: list[int]) -> int:
        return values[int(rng.integers(len(values)))]  # Python integers: no numpy casting

    def seq_value() -> int:
        v = pick([0, 1, 15, 16384, 32767, 32768, 2**31 - 1, 2**31, 2**32 - 1,
                  int(rng.integers(16, 16000)), int(rng.integers(0, 2**32))])
        return v if v not in VALID_SEQS else 15

    def mutate(msg: bytes, parts: list[np.ndarray]) -> tuple[bytes, list[tuple[np.ndarray, int]]]:
        """A mutated message and (part, tag) to send after it."""
        b = bytearray(msg)
        seq = int.from_bytes(b[8:12], "little")
        how = rng.integers(8)
        if how == 0:  # flip bytes
            for _ in range(int(rng.integers(1, 5))):
                b[int(rng.integers(len(b)))] ^= int(rng.integers(1, 256))
        elif how == 1:  # one header field to an extreme
            _, version, op, seq_, flags, nfields, reserved, nbytes = HEADER.unpack_from(b)
            field = rng.integers(6)
            if field == 0:
                seq_ = seq_value()
            elif field == 1:
                flags = pick([FLAG_RMA, FLAG_INLINE, 3, 4, 0xFFFFFFFF])
            elif field == 2:
                nfields = pick([0, 1, 5, 4096, 4097, 2**32 - 1])
            elif field == 3:
                reserved = int(rng.integers(1, 2**32))
            elif field == 4:
                nbytes = pick([0, 1, nbytes + 1, max(nbytes - 1, 0), 2**40, 2**63, 2**64 - 1])
            else:
                version = int(rng.integers(0, 2**16))
            HEADER.pack_into(b, 0, bytes(b[:4]), version, op, seq_, flags, nfields, reserved, nbytes)
        elif how == 2:  # truncate
            del b[int(rng.integers(0, len(b))):]
        elif how == 3:  # extend
            b += rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
        elif how == 4:  # random bytes behind a valid-looking magic
            b = bytearray(REQUEST_MAGIC) + rng.integers(0, 256, int(rng.integers(0, 80)), dtype=np.uint8).tobytes()
        tag = payload_tag(seq) if 16 <= seq < 16000 else payload_tag(16)
        sends = [(p, tag) for p in parts]
        if how == 5 and sends:  # payload: missing, extra, wrong size, wrong tag
            what = rng.integers(4)
            if what == 0:
                sends = sends[:-1]
            elif what == 1:
                sends.append((rng.integers(0, 256, int(rng.integers(1, 9000)), dtype=np.uint8), tag))
            elif what == 2:
                p, t = sends[0]
                sends[0] = (np.concatenate([p, p[:1]]) if rng.random() < 0.5 else p[:-1], t)
            else:
                sends = [(p, int(rng.integers(0, 32768))) for p, _ in sends]
        return bytes(b), sends

    def allowed(msg: bytes) -> bool:
        op_ok = len(msg) < 8 or int.from_bytes(msg[6:8], "little") not in EXCLUDED_OPS
        return op_ok and (len(msg) < 12 or int.from_bytes(msg[8:12], "little") not in VALID_SEQS)

    pairs = 0
    for i in range(N):
        shard = int(rng.integers(nshards))
        roll = rng.random()
        if roll < 0.03:  # a stray payload, on a payload tag with no request (valid seqs' tags included)
            tag = payload_tag(int(rng.choice([int(rng.integers(16, 16000)), int(rng.choice(VALID_SEQS))])))
            send(shard, rng.integers(0, 256, int(rng.integers(1, 70000)), dtype=np.uint8), tag)
            stats["stray_payloads"] += 1
        elif roll < 0.05:  # garbage on any tag
            send(shard, rng.integers(0, 256, int(rng.integers(0, 200)), dtype=np.uint8), int(rng.integers(0, 32768)))
        else:
            msg, sends = mutate(*base(i))
            while not allowed(msg):
                msg, sends = mutate(*base(i))
            send(shard, msg, TAG_REQUEST)
            for part, tag in sends:
                send(shard, part, tag)
        stats["mutated"] += 1
        if i % EVERY == EVERY - 1:
            valid_pair(pairs)
            pairs += 1
            drain()
    time.sleep(0.5)
    drain()
    comm.send(expected, dest=1, tag=DONE_TAG)
    return stats


def bystander() -> dict[str, int]:
    rng = np.random.default_rng(SEED + 1)
    stats = {"bystander_round_trips": 0, "bystander_wrong": 0, "worst_ms": 0.0}
    i = 0
    while not comm.iprobe(source=0, tag=DONE_TAG):
        x = rng.random(int(rng.choice([1, 500, 9000])))
        t0 = time.perf_counter()
        c.put_tensor(f"by.{i % 20}", x)
        got = c.get_tensor(f"by.{i % 20}")
        stats["worst_ms"] = max(stats["worst_ms"], (time.perf_counter() - t0) * 1e3)
        stats["bystander_round_trips"] += 1
        if not np.array_equal(got, x):
            stats["bystander_wrong"] += 1
        i += 1
    expected = comm.recv(source=0, tag=DONE_TAG)  # sized by its probe: no irecv buffer to overrun
    wrong = 0
    for key, crc in expected.items():
        arr = c.get_tensor(key)
        raw = np.ascontiguousarray(arr).reshape(-1).view(np.uint8).tobytes() if arr.size else b""
        if zlib.crc32(raw) ^ zlib.crc32(TensorDesc(arr.dtype, arr.shape).pack()) != crc:
            wrong += 1
    stats["reread"] = len(expected)
    stats["reread_wrong"] = wrong
    info = c.get_server_info()
    stats["shards_alive"] = len(info)
    stats["discarded_messages"] = sum(s["discarded_messages"] for s in info)
    stats["internal_errors"] = sum(s["internal_errors"] for s in info)
    return stats


t0 = time.monotonic()
try:
    mine = fuzzer() if rank == 0 else bystander()
except BaseException:  # fail fast: the other rank would wait for this one for good
    traceback.print_exc()
    sys.stdout.flush()
    MPI.COMM_WORLD.Abort(1)
everything = comm.gather(mine, root=1)
if rank == 1:
    stats = {k: v for d in everything for k, v in d.items()}
    stats["seconds"] = round(time.monotonic() - t0, 1)
    print("fuzz stats " + " ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}"
                                   for k, v in stats.items()), flush=True)
    assert stats["wrong"] == 0 and stats["bystander_wrong"] == 0 and stats["reread_wrong"] == 0, stats
    assert stats["shards_alive"] == nshards and stats["internal_errors"] == 0, stats
    assert stats["valid_pairs"] == N // EVERY, stats
    print("fuzz OK", flush=True)
comm.Barrier()
