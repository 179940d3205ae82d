"""One end of an SST stream for tests/test_adios2_sst.py; prints one JSON line of what it saw.

    adios2_sst_peer.py ROLE PATH STEPS [key=value ...]

ROLE: mpistage-writer, mpistage-reader (Client over the adios2 backend), stock-writer,
stock-reader (plain ``adios2.Stream``). Options: ``sleep`` (seconds between steps),
``timeout`` (reader's step timeout), ``die_after`` (SIGKILL itself after that many steps),
``params`` (SST parameters ``k:v,k:v``), ``tries`` (reader: begin-step attempts in all),
``expect_f`` (reader: 0 when ``f`` comes C-ordered, from a stock writer).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import adios2
import numpy as np

from mpistage import Client, Dataset
from mpistage.backends.adios2_config import adios2_backend
from mpistage.backends.adios2_store import EndOfStreamError, StepTimeoutError
from mpistage.errors import KeyNotFoundError, MpistageError


def field(step: int) -> np.ndarray:
    """What every writer puts as ``u`` at ``step``."""
    return np.arange(12, dtype=np.float64).reshape(3, 4) + step


def die_if(opts: dict[str, str], done: int) -> None:
    if "die_after" in opts and done >= int(opts["die_after"]):
        print(json.dumps({"died_after": done}), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


def params(opts: dict[str, str]) -> dict[str, str]:
    return dict(kv.split(":", 1) for kv in opts["params"].split(",")) if opts.get("params") else {}


def mpistage_writer(path: str, steps: int, opts: dict[str, str]) -> dict:
    client = Client(backend=adios2_backend("SST", path, "writer", params=params(opts)))
    started = time.perf_counter()
    for step in range(steps):
        with client._store.step():  # the step context: begin, put, publish
            client.put_tensor("u", field(step))
            client.put_tensor("f", np.asfortranarray(field(step).astype(np.int32)))
            ds = Dataset("probe")
            ds.add_tensor("p", np.full(2, step, np.float32))
            ds.add_meta_string("units", "K")
            client.put_dataset(ds)
        die_if(opts, step + 1)
        time.sleep(float(opts.get("sleep", 0)))
    client.shutdown_servers()
    return {"wrote": steps, "seconds": time.perf_counter() - started}


def mpistage_reader(path: str, steps: int, opts: dict[str, str]) -> dict:
    client = Client(backend=adios2_backend("SST", path, "reader", timeout_s=float(opts.get("timeout", 20))))
    events: list = []
    seen: list[int] = []
    for _ in range(int(opts.get("tries", steps))):
        try:
            u = client.get_tensor("u")
        except StepTimeoutError:
            events.append("timeout")
            continue
        except EndOfStreamError:
            events.append("end")
            break
        except MpistageError as exc:
            events.append(f"error:{type(exc).__name__}")
            break
        step = int(u[0, 0])
        ok = bool(np.array_equal(u, field(step)))
        f = client.get_tensor("f")
        fortran = opts.get("expect_f", "1") == "1"  # a stock writer sets no order attribute
        ok &= bool(f.flags.f_contiguous == fortran and np.array_equal(f, field(step).astype(np.int32)))
        probe = client.get_dataset("probe")
        ok &= probe.get_meta_strings("units") == ["K"] and float(probe.get_tensor("p")[0]) == step
        try:
            client.get_tensor("absent")
        except KeyNotFoundError:
            pass
        else:
            ok = False
        seen.append(step)
        events.append("ok" if ok else "wrong")
        client.flush()
        die_if(opts, len(seen))
        time.sleep(float(opts.get("sleep", 0)))
    info = client.get_server_info()[0]
    client.shutdown_servers()
    return {"seen": seen, "events": events, "steps_missed": info["steps_missed"]}


def stock_writer(path: str, steps: int, opts: dict[str, str]) -> dict:
    adios = adios2.Adios()
    io = adios.declare_io("stock-writer")
    io.set_engine("SST")
    io.set_parameters({"RendezvousReaderCount": "1", "DataTransport": "WAN", **params(opts)})
    with adios2.Stream(io, path, "w") as stream:
        for step in range(steps):
            stream.begin_step()
            stream.write("u", field(step))
            stream.write("f", field(step).astype(np.int32))  # a stock writer has no order attribute
            stream.write("probe/p", np.full(2, step, np.float32))
            if step == 0:
                stream.write_attribute("probe/units", "K")  # string arrays arrive empty over SST
            stream.end_step()
            time.sleep(float(opts.get("sleep", 0)))
    return {"wrote": steps}


def stock_reader(path: str, steps: int, opts: dict[str, str]) -> dict:
    adios = adios2.Adios()
    io = adios.declare_io("stock-reader")
    io.set_engine("SST")
    io.set_parameters({"OpenTimeoutSecs": "30"})
    seen, checks = [], []
    with adios2.Stream(io, path, "r") as stream:
        for _ in stream:
            u = stream.read("u")
            step = int(u[0, 0])
            seen.append(step)
            checks.append({"u": bool(np.array_equal(u, field(step))),
                           "f": bool(np.array_equal(stream.read("f"), field(step).astype(np.int32))),
                           "probe/p": bool(np.array_equal(stream.read("probe/p"), np.full(2, step, np.float32))),
                           "probe/units": stream.read_attribute_string("probe/units") == "K",
                           "f/mpistage.order": stream.read_attribute_string("f/mpistage.order") == "F",
                           "u/dimensions": stream.read_attribute_string("u/dimensions") == "u_dim0 u_dim1"})
    return {"seen": seen, "checks": checks}


ROLES = {"mpistage-writer": mpistage_writer, "mpistage-reader": mpistage_reader,
         "stock-writer": stock_writer, "stock-reader": stock_reader}

if __name__ == "__main__":
    role, path, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    options = dict(arg.split("=", 1) for arg in sys.argv[4:])
    print(json.dumps(ROLES[role](path, steps, options)), flush=True)
