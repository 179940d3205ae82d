"""A client of 2 started shards for tests/test_adios2_bridge.py (connect mode, no mpiexec): drives
the servers' ADIOS2 bridge and checks what comes out with stock adios2.

    adios2_bridge_check.py export DIR   # BP5 export of 2 steps, read by adios2.FileReader; SST export
    adios2_bridge_check.py ingest DIR   # a stock SST writer's 3 steps ingested, read with get_tensor;
                                        # then the export's BP5 file (run export first)
    adios2_bridge_check.py seed         # put cli.a for the command-line export
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import adios2
import numpy as np

from mpistage import Client, Dataset
from mpistage.errors import BadArgumentError
from mpistage.router import shard_of

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from adios2_sst_peer import field  # noqa: E402

NSHARDS = 2


def expect_error(kind: type[Exception], text: str, fn, *args) -> None:
    try:
        fn(*args)
    except kind as exc:
        assert text in str(exc), exc
        return
    raise AssertionError(f"{fn.__name__}{args} did not raise {kind.__name__}")


def tensors(step: int) -> dict[str, np.ndarray]:
    """What the export scenario puts before step ``step``: keys on both shards, one Fortran-ordered."""
    return {"out.a": np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4) + step),
            "out.b": np.full(4, step, np.int64), "out.d": np.arange(3, dtype=np.float64) * step}


def stock_stream_reader(path: str) -> None:
    """A plain adios2.Stream reader of an SST export (its own process: adios2's open holds the
    GIL while it waits): prints each step's out.a (None when the step lacks it) as JSON."""
    io = adios2.Adios().declare_io("stock-bridge-reader")
    io.set_engine("SST")
    io.set_parameters({"OpenTimeoutSecs": "60"})
    with adios2.Stream(io, path, "r") as stream:
        for _ in stream:
            has = "out.a" in stream.available_variables()
            print(json.dumps(stream.read("out.a").tolist() if has else None), flush=True)


def export(client: Client, out: Path) -> None:
    for key, value in tensors(0).items():
        client.put_tensor(key, value)
    ds = Dataset("out.ds")
    ds.add_tensor("t", np.arange(5, dtype=np.int64))
    ds.add_meta_string("units", "K")
    client.put_dataset(ds)
    base = out / "store.bp"
    paths = client.bridge_export("bp", "BP5", base, tensors=["out.?", "out.none"], datasets=["out.ds"])
    assert paths == [f"{base}.shard{k}" for k in range(NSHARDS)], paths
    expect_error(BadArgumentError, "already", client.bridge_export, "bp", "BP5", base, ["out.a"])
    first = client.bridge_step("bp")
    assert first == {"step": 0, "tensors": ["out.a", "out.b", "out.d"], "datasets": ["out.ds"],
                     "missing": ["out.none"]}, first
    for key, value in tensors(1).items():
        client.put_tensor(key, value)
    assert client.bridge_step("bp")["step"] == 1
    reports = client.bridge_stop("bp")
    assert [(r["state"], r["steps"]) for r in reports] == [("stopped", 2)] * NSHARDS, reports
    for k in range(NSHARDS):
        with adios2.FileReader(f"{base}.shard{k}") as fr:
            names = set(fr.available_variables())
            mine = {key for key in tensors(0) if shard_of(key, NSHARDS) == k}
            if shard_of("out.ds", NSHARDS) == k:
                mine.add("out.ds/t")
                assert fr.read_attribute_string("out.ds/units") == "K"
            assert names == mine, (k, names, mine)
            for key in mine - {"out.ds/t"}:
                for step in (0, 1):
                    got = fr.read(key, step_selection=[step, 1])
                    np.testing.assert_array_equal(got, tensors(step)[key])
            if "out.a" in mine:
                assert fr.read_attribute_string("out.a/mpistage.order") == "F"
    expect_error(BadArgumentError, "no export", client.bridge_step, "bp")
    expect_error(BadArgumentError, "no bridge", client.bridge_stop, "bp")
    expect_error(BadArgumentError, "engine", client.bridge_export, "bad", "HDF5", base, ["out.a"])

    # SST, lossless: each shard's writer waits at open for its stream's reader (a stock
    # adios2.Stream); out.a's shard publishes it in both steps, the other shard empty steps
    stream = str(out / "live")
    readers = [subprocess.Popen([sys.executable, __file__, "stock-reader", f"{stream}.shard{k}"],
                                stdout=subprocess.PIPE, text=True) for k in range(NSHARDS)]
    try:
        client.bridge_export("sst", "SST", stream, tensors=["out.a"], params={"RendezvousReaderCount": "1"})
        for step in (0, 1):
            client.put_tensor("out.a", tensors(step)["out.a"])
            client.bridge_step("sst")
        client.bridge_stop("sst")  # ends the streams: the readers exit
        seen = [r.communicate(timeout=60)[0] for r in readers]
    finally:
        for r in readers:
            if r.poll() is None:
                r.kill()
    assert [r.returncode for r in readers] == [0] * NSHARDS, seen
    for k, text in enumerate(seen):
        got = [json.loads(line) for line in text.splitlines()]
        if k == shard_of("out.a", NSHARDS):
            assert len(got) == 2, text
            for step, array in enumerate(got):
                np.testing.assert_array_equal(np.array(array, np.float32), tensors(step)["out.a"])
        else:
            assert got == [None, None], text
    print("exported", flush=True)


def ingest(client: Client, out: Path) -> None:
    stream = str(out / "sim")
    writer = subprocess.Popen([sys.executable, str(HERE / "adios2_sst_peer.py"), "stock-writer", stream, "3",
                               f"params=RendezvousReaderCount:{NSHARDS}"], stdout=subprocess.PIPE, text=True)
    try:
        client.bridge_ingest("sim", "SST", stream, prefix="in.", step_keys=True, variables=["u", "probe/*"],
                             timeout=30)
        assert writer.wait(60) == 0, writer.stdout.read() if writer.stdout else ""
    finally:
        if writer.poll() is None:
            writer.kill()
    assert client.poll_tensor("in.u.2", 100, 300) and client.poll_tensor("in.probe/p.2", 100, 300)
    reports = client.bridge_stop("sim", wait=30)  # the shards finish the stream the writer closed
    assert [(r["state"], r["steps"]) for r in reports] == [("ended", 3)] * NSHARDS, reports
    for step in range(3):
        np.testing.assert_array_equal(client.get_tensor(f"in.u.{step}"), field(step))
        np.testing.assert_array_equal(client.get_tensor(f"in.probe/p.{step}"), np.full(2, step, np.float32))
    assert not client.tensor_exists("in.f.0") and not client.tensor_exists("in.u.3")

    # a BP5 file (the export's, run before this): its steps in turn under one key, the last one stays
    client.bridge_ingest("file", "BP5", out / f"store.bp.shard{shard_of('out.b', NSHARDS)}", prefix="again.",
                         variables=["out.b"], timeout=30)
    assert client.poll_tensor("again.out.b", 100, 300)
    reports = client.bridge_stop("file", wait=30)
    assert {(r["state"], r["steps"]) for r in reports} == {("ended", 2)}, reports
    np.testing.assert_array_equal(client.get_tensor("again.out.b"), tensors(1)["out.b"])
    print("ingested", flush=True)


def main() -> None:
    if sys.argv[1] == "stock-reader":
        stock_stream_reader(sys.argv[2])
        return
    client = Client()
    if sys.argv[1] == "seed":
        client.put_tensor("cli.a", np.arange(6, dtype=np.int32).reshape(2, 3))
        print("seeded", flush=True)
        return
    {"export": export, "ingest": ingest}[sys.argv[1]](client, Path(sys.argv[2]))


if __name__ == "__main__":
    main()
