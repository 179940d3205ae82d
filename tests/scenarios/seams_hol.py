"""No head-of-line stall (run with one shard and two client ranks): client rank 0 sends a
PUT_TENSOR header announcing a 64 KiB point-to-point payload and withholds the payload for
5 s; meanwhile rank 1 measures its 8-byte put round trips on the same shard, which must stay under
1 ms p99. Then rank 0 sends the payload and its put completes."""

import time

import numpy as np

import mpistage
from mpistage import Client, app_comm
from mpistage._mpi.process import get_connection
from mpistage.protocol import (
    REPLY_MAGIC,
    REQUEST_MAGIC,
    TAG_PAYLOAD,
    TAG_REQUEST,
    Op,
    Status,
    describe,
    pack_message,
    unpack_message,
)

STALL_SECONDS = 5.0
ROUND_TRIPS = 3000
P99_LIMIT = 1e-3
SEQ = 32000  # far from the seqs this rank's client uses

c = Client()
comm = app_comm()
rank = comm.Get_rank()
assert comm.Get_size() == 2 and c.nshards == 1, "run with one shard and two client ranks"
MPI = mpistage.mpienv.mpi()

if rank == 0:
    inter = get_connection().link.inter
    big = np.arange(8192, dtype=np.float64)  # 64 KiB: neither inline nor (MPMD) one-sided
    desc, _ = describe(big)
    head = pack_message(REQUEST_MAGIC, Op.PUT_TENSOR, SEQ, [b"stalled", desc.pack()], big.nbytes)
    inter.Send(np.frombuffer(head, np.uint8), 0, TAG_REQUEST)
    comm.Barrier()  # the header is out: rank 1 measures now
    time.sleep(STALL_SECONDS)
    inter.Send(big, 0, TAG_PAYLOAD)
    status = MPI.Status()
    msg = inter.Mprobe(0, SEQ, status)
    buf = np.empty(status.Get_count(MPI.BYTE), np.uint8)
    msg.Recv(buf)
    header, fields = unpack_message(buf, REPLY_MAGIC)
    assert header.code == Status.OK, bytes(fields[0])
    assert np.array_equal(c.get_tensor("stalled"), big)
    print("seams_hol: the withheld put completed after the stall", flush=True)
    comm.Barrier()
else:
    x = np.arange(1, dtype=np.float64)  # 8 bytes
    for _ in range(200):
        c.put_tensor("fast", x)
    comm.Barrier()
    start = time.monotonic()
    times = np.empty(ROUND_TRIPS)
    for i in range(ROUND_TRIPS):
        t0 = time.perf_counter()
        c.put_tensor("fast", x)
        times[i] = time.perf_counter() - t0
    elapsed = time.monotonic() - start
    links = c.get_server_info()[0]["links"]
    waiting = sum(link["waiting_payloads"] for link in links)
    p50, p99 = np.percentile(times, [50, 99])
    print(f"seams_hol: {ROUND_TRIPS} puts in {elapsed:.2f} s during the stall: p50 {p50 * 1e6:.1f} us, "
          f"p99 {p99 * 1e6:.1f} us, max {times.max() * 1e6:.0f} us; requests waiting for a payload: {waiting}",
          flush=True)
    assert elapsed < STALL_SECONDS - 1, "the measurement must fall inside the stall"
    assert waiting == 1, "the stalled request must still be waiting when the measurement ends"
    assert p99 < P99_LIMIT, f"p99 {p99 * 1e6:.0f} us is over {P99_LIMIT * 1e6:.0f} us"
    comm.Barrier()
print(f"seams_hol OK rank {rank}", flush=True)
