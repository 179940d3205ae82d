"""A bridge between the mpistage store and ADIOS2: export chosen keys of the store to a BP5 file
or SST stream, one ADIOS2 step per export; ingest an SST stream (or BP5 file) written by a
plain-adios2 program into the store, one store update per step.

The bridge is a client of the store (any backend, normally "mpi") and an ADIOS2 engine of its
own: the data goes store -> bridge -> ADIOS2 (or back). Driven by a call
(:func:`export_step`, :func:`ingest`) or by the command line::

    python -m mpistage.backends.adios2_bridge export --engine BP5 --path out.bp --keys u v \\
        --datasets obs --steps 10 --interval 1.0
    python -m mpistage.backends.adios2_bridge ingest --engine SST --path sim --prefix sim. --step-keys

(the store is found as by ``Client()``: ``--address`` or ``$MPISTAGE_ADDRESS``).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from ..client import Client
from .adios2_config import DEFAULT_TIMEOUT_S, Adios2Options
from .adios2_store import Adios2Store, EndOfStreamError


def export_step(client: Client, writer: Adios2Store, keys: Sequence[str] = (),
                datasets: Sequence[str] = ()) -> None:
    """Copy tensors ``keys`` and datasets ``datasets`` from the store into one ADIOS2 step and
    publish it. Raises KeyNotFoundError for a key the store lacks; ADIOS2 cannot take puts
    back, so that step is still published, with what was put before the missing key."""
    try:
        for key in keys:
            writer.put_tensor(key, client.get_tensor(key))
        for name in datasets:
            writer.put_dataset(name, client.get_dataset(name))
    finally:
        writer.flush()


def ingest(client: Client, reader: Adios2Store, prefix: str = "", step_keys: bool = False,
           steps: int | None = None, only: Sequence[str] = ()) -> int:
    """Put every variable of each ADIOS2 step (or those named in ``only``) into the store as
    tensor ``<prefix><name>`` (``<prefix><name>.<step>`` with ``step_keys``), until the writer
    ends the stream or ``steps`` steps are in. Returns how many steps were ingested; raises
    StepTimeoutError when a step does not come within the reader's timeout."""
    done = 0
    while steps is None or done < steps:
        try:
            names = reader.variables()
        except EndOfStreamError:
            break
        step = reader.current_step
        for name in names:
            if only and name not in only:
                continue
            key = f"{prefix}{name}.{step}" if step_keys else f"{prefix}{name}"
            client.put_tensor(key, reader.get_tensor(name))
        reader.flush()
        done += 1
    return done


def main(argv: Sequence[str] | None = None) -> None:
    """The command line (see the module's docstring)."""
    p = argparse.ArgumentParser(prog="python -m mpistage.backends.adios2_bridge", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("direction", choices=["export", "ingest"])
    p.add_argument("--engine", choices=["SST", "BP5"], required=True)
    p.add_argument("--path", required=True, help="SST stream name or BP5 file")
    p.add_argument("--address", help="the store's connection file (default: $MPISTAGE_ADDRESS)")
    p.add_argument("--param", action="append", default=[], metavar="K=V", help="ADIOS2 engine parameter")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="ingest: seconds to wait per step")
    p.add_argument("--steps", type=int, help="export: how many steps (default 1); ingest: at most")
    p.add_argument("--keys", nargs="*", default=[], help="export: tensors; ingest: only these variables")
    p.add_argument("--datasets", nargs="*", default=[], help="export: datasets")
    p.add_argument("--interval", type=float, default=0.0, help="export: seconds between steps")
    p.add_argument("--prefix", default="", help="ingest: prefix of the store keys")
    p.add_argument("--step-keys", action="store_true", help="ingest: a key per step (<prefix><name>.<step>)")
    args = p.parse_args(argv)
    params = dict(kv.split("=", 1) for kv in args.param)
    mode = "writer" if args.direction == "export" else "reader"
    client = Client(address=args.address)
    adios = Adios2Store(Adios2Options(args.engine, args.path, mode, args.timeout, params))
    try:
        if args.direction == "export":
            for step in range(args.steps or 1):
                if step:
                    time.sleep(args.interval)
                export_step(client, adios, args.keys, args.datasets)
            print(f"exported {args.steps or 1} steps to {args.path}", flush=True)
        else:
            n = ingest(client, adios, args.prefix, args.step_keys, args.steps, args.keys)
            print(f"ingested {n} steps from {args.path}", flush=True)
    finally:
        adios.close()


if __name__ == "__main__":
    main()
