"""Limits enforced before memory is spent: header range checks, descriptor dimensions and shape
overflow, payload sizing before receipt, snapshots of any stored tensor, stale snapshot temporary
files, the per-key overhead in the cap's accounting; and under real mpiexec the cap checked on a
refused put's announced size, parts split into several messages, and a list's length limit; the
Fortran client's header limit and its payload parts split into several messages both ways."""

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from harness import ROOT, run, run_mpmd

from mpistage.errors import BadArgumentError, StoreFullError
from mpistage.jobs import server_command
from mpistage.protocol import (
    MAX_DIMS,
    SEQ_MAX,
    TAG_PAYLOAD,
    Header,
    Kind,
    Op,
    TensorDesc,
    WireError,
    check_request_header,
    chunks,
    is_payload_tag,
    payload_tag,
)
from mpistage.server.handlers import Request, StoreHandlers
from mpistage.server.store import ShardStore, StoredTensor
from mpistage.server.store.snapshot import remove_stale_temporaries, restore_snapshot, write_snapshot


def _desc(ndim: int, dim: int = 1, code: int = 2) -> bytes:
    return bytes([code, 0]) + ndim.to_bytes(2, "little") + b"".join(dim.to_bytes(8, "little") for _ in range(ndim))


def test_payload_tags_stay_under_the_standard_tag_bound():
    assert payload_tag(16) == 16400 and payload_tag(SEQ_MAX) == 32767 == TAG_PAYLOAD + SEQ_MAX
    assert is_payload_tag(16400) and not is_payload_tag(TAG_PAYLOAD + 15) and not is_payload_tag(1)
    assert chunks(5, 2) == [(0, 2), (2, 2), (4, 1)] and chunks(0) == []


@pytest.mark.parametrize("header, text", [
    (Header(Op.INFO, 2**32 - 1, 0), "seq"),
    (Header(Op.INFO, 15, 0), "seq"),
    (Header(Op.INFO, 16384, 0), "seq"),
    (Header(Op.INFO, 16, 0, flags=4), "flags"),
    (Header(Op.PUT_TENSOR, 16, 2, payload_nbytes=2**63), "limit"),
    (Header(Op.PUT_TENSOR, 16, 2, payload_nbytes=8, flags=3), "not both"),
    (Header(Op.PUT_TENSOR, 16, 2, payload_nbytes=4000, flags=2), "inline"),
])
def test_request_header_fields_are_range_checked(header, text):
    with pytest.raises(WireError, match=text):
        check_request_header(header)


def test_descriptors_are_limited_in_dimensions_and_bytes():
    assert TensorDesc.unpack(_desc(MAX_DIMS)).shape == (1,) * MAX_DIMS
    with pytest.raises(WireError, match="dimensions"):
        TensorDesc.unpack(_desc(100))
    with pytest.raises(WireError, match="limit"):
        TensorDesc.unpack(_desc(2, 2**40))  # 2**80 elements: no overflow, refused
    with pytest.raises(WireError, match="limit"):
        TensorDesc.unpack(_desc(2, 2**64 - 1))
    with pytest.raises(WireError, match="limit"):
        TensorDesc.unpack(bytes([2, 0, 2, 0]) + (0).to_bytes(8, "little") + (2**63).to_bytes(8, "little"))


def _request(op: Op, fields: list[bytes], nbytes: int) -> Request:
    return Request(None, 0, Header(op, 16, len(fields), nbytes), [memoryview(f) for f in fields], [])


def test_admission_sizes_parts_and_checks_the_cap_before_anything_is_received():
    store = ShardStore(max_bytes=1 << 20)
    handlers = StoreHandlers(store)
    f64 = TensorDesc(np.dtype("float64"), (1000,)).pack()
    assert handlers.admit(_request(Op.PUT_TENSOR, [b"k", f64], 8000)) == [8000]
    big = TensorDesc(np.dtype("float64"), (1 << 20,)).pack()
    with pytest.raises(StoreFullError):
        handlers.admit(_request(Op.PUT_TENSOR, [b"k", big], 8 << 20))
    store.put_tensor("k", StoredTensor(TensorDesc(np.dtype("uint8"), (900_000,)), np.zeros(900_000, np.uint8)))
    handlers.admit(_request(Op.PUT_TENSOR, [b"k", f64], 8000))  # replacing k frees its bytes
    with pytest.raises(StoreFullError):
        handlers.admit(_request(Op.PUT_TENSOR, [b"other", TensorDesc(np.dtype("uint8"), (200_000,)).pack()],
                                200_000))


def test_snapshot_keeps_tensors_of_more_dimensions_than_hdf5(tmp_path):
    store = ShardStore()
    arr = np.arange(6.0).reshape((1,) * 38 + (2, 3))
    fortran = np.asfortranarray(np.arange(24, dtype=np.int16).reshape((2, 3, 4) + (1,) * 37))
    for key, a in [("many", arr), ("many.f", fortran), ("scalar", np.array(7.0))]:
        order = 1 if a.flags.f_contiguous and not a.flags.c_contiguous else 0
        flat = a.reshape(-1, order="F" if order else "C").view(np.uint8).copy()
        store.put_tensor(key, StoredTensor(TensorDesc(a.dtype, a.shape, order), flat))
    write_snapshot(store.contents(), tmp_path, 0, 1)
    back = ShardStore()
    assert restore_snapshot(back, tmp_path, 0, 1) == 3
    for key, a in [("many", arr), ("many.f", fortran), ("scalar", np.array(7.0))]:
        got = back.get(Kind.TENSOR, key).array()
        assert got.shape == a.shape and np.array_equal(got, a)


def test_stale_snapshot_temporary_is_removed_at_start(tmp_path):
    stale = tmp_path / ".shard-0-of-2.h5.k1ll3d.tmp"
    other = tmp_path / ".shard-1-of-2.h5.abc.tmp"
    stale.write_bytes(b"half a file")
    other.write_bytes(b"another shard's")
    assert remove_stale_temporaries(tmp_path, 0, 2) == [stale]
    assert not stale.exists() and other.exists()


def test_lists_refuse_appends_past_the_reply_limit():
    store = ShardStore()
    store.lists["l"] = ["d"] * 4096
    with pytest.raises(BadArgumentError, match="limit is 4096"):
        store.append_to_list("l", "d")


KEYS_SCRIPT = """
import gc, json, sys
import numpy as np
from mpistage.protocol import Header, Op, TensorDesc, encode_tensor
from mpistage.server.handlers import Request, StoreHandlers
from mpistage.server.store import ShardStore

def rss():
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmRSS"))

n = int(sys.argv[1])
store = ShardStore()
handlers = StoreHandlers(store)
desc = encode_tensor(np.zeros(1))[0]
gc.collect()
before, used = rss(), store.used_bytes
for i in range(n):  # what a shard does per 8-byte put: the request's fields, a payload buffer, the store
    key = f"field.{i:07d}".encode()
    req = Request(None, 0, Header(Op.PUT_TENSOR, 16, 2, 8), [memoryview(key), memoryview(desc)], [])
    part = store.alloc(8)
    part[...] = 1
    req.payload.append(part)
    handlers.put_tensor(req)
gc.collect()
print(json.dumps({"grew": rss() - before, "counted": store.used_bytes - used}))
"""


def test_per_key_overhead_is_counted_within_ten_percent_of_real_growth():
    out = subprocess.run([sys.executable, "-c", KEYS_SCRIPT, "300000"], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    got = json.loads(out)
    ratio = got["counted"] / got["grew"]
    print(f"300000 8-byte keys: shard grew {got['grew'] / 2**20:.1f} MiB, counted {got['counted'] / 2**20:.1f} MiB")
    assert 0.9 <= ratio <= 1.1, got


def test_cap_is_checked_before_a_refused_payload_is_received():
    out = run_mpmd("limits.py", server_args=["--max-memory", "64M"], app_args=["cap"], timeout=180).stdout
    assert "limits cap OK" in out, out
    grew = int(re.search(r"rss grew (\d+)", out).group(1))
    assert grew < 32 << 20, out  # the refused 256 MiB put never landed in the shard


def test_parts_travel_in_several_messages_and_lists_are_limited():
    out = run_mpmd("limits.py", app_args=["chunks"], timeout=180, env={"MPISTAGE_MESSAGE_BYTES": "100000"}).stdout
    assert "limits chunks OK" in out, out


@pytest.mark.skipif(shutil.which("mpif90") is None, reason="needs mpif90 (gfortran + Open MPI)")
def test_fortran_header_limit_and_parts_in_several_messages():
    """fortran/tests/limits.f90: a header over MAX_HEADER_BYTES fails in the Fortran client with
    the limit in its error (it is not sent: the server would discard it without a reply); then
    tensors and a dataset go both ways as messages of at most MPISTAGE_MESSAGE_BYTES."""
    run(["make", "-C", str(ROOT / "fortran"), "tests"], timeout=300)
    exe = ROOT / "fortran" / "build" / "tests" / "limits"
    out = run(["mpiexec", "-n", "1", *server_command(), ":", "-n", "1", str(exe)], timeout=120,
              env={"MPISTAGE_MESSAGE_BYTES": "100000"}).stdout
    assert "LIMITS header code=5 error=a request of 1100071 bytes (header and fields) is more than the " \
           "limit 1048576: not sent" in out, out
    assert "LIMITS done: 0 failures" in out, out
    assert "discarded" not in out, out  # nothing over the limit reached the server
