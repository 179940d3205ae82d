"""``mpistage``: start and stop servers, launch jobs with the right Open MPI settings, inspect.

    mpistage launch --servers 2 -n 4 -- python app.py     # one MPMD job: servers + application
    mpistage start --shards 2 --dir run/                   # servers on their own (connect mode)
    mpistage run --dir run/ -n 4 -- python app.py          # a client job that connects to them
    mpistage info --dir run/                               # per-shard statistics
    mpistage stop --dir run/
    mpistage bridge export --dir run/ --name out --engine BP5 --path out.bp --tensors 'sim.*' --steps 1
    mpistage bridge ingest --dir run/ --name sim --engine SST --path sim --prefix sim.
    mpistage experiment status exp/                        # members of an Experiment (launcher)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._mpi.connfile import SECRET_ENV, new_secret
from .jobs import mpi_environ, server_command

URI_FILE = "ompi-server.uri"
ADDRESS_FILE = "address"
PIDS_FILE = "pids.json"


def _strip_dashes(cmd: list[str]) -> list[str]:
    return cmd[1:] if cmd and cmd[0] == "--" else cmd


def _wait_for(path: Path, seconds: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + seconds
    while not (path.exists() and path.stat().st_size > 0):
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"mpistage: process exited with {proc.returncode} before writing {path}")
        if time.monotonic() > deadline:
            raise SystemExit(f"mpistage: {path} did not appear within {seconds} s")
        time.sleep(0.05)


def cmd_launch(args: argparse.Namespace) -> int:
    """One MPMD job: server ranks first, then the application."""
    cmd = ["mpiexec", "-n", str(args.servers), *server_command(), *args.server_args.split(),
           ":", "-n", str(args.n), *_strip_dashes(args.command)]
    return subprocess.call(cmd, env=mpi_environ())


def start_ompi_server(run_dir: Path, timeout: float = 30, **popen: Any) -> subprocess.Popen:
    """Start ``ompi-server`` in its own session; returns once it has written ``run_dir/ompi-server.uri``."""
    uri = run_dir / URI_FILE
    uri.unlink(missing_ok=True)
    with open(run_dir / "ompi-server.log", "w") as log:
        ompi = subprocess.Popen(["ompi-server", "--no-daemonize", "--report-uri", str(uri)], stdout=log,
                                stderr=subprocess.STDOUT, env=mpi_environ(), start_new_session=True, **popen)
    _wait_for(uri, timeout, ompi)
    return ompi


def start_servers(run_dir: Path, shards: int, server_args: Sequence[str] = (), timeout: float = 60,
                  uri: Path | None = None, **popen: Any) -> dict[str, subprocess.Popen]:
    """Start the server ranks (one ``mpiexec`` job, connect mode) with a fresh deployment secret
    (``$MPISTAGE_SECRET`` when set) and, unless ``uri`` names a running one, ``ompi-server``; write
    ``run_dir/pids.json``; return the processes once ``run_dir/address`` exists.
    ``popen`` goes to ``subprocess.Popen`` (the launcher passes a ``preexec_fn``)."""
    run_dir = run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    address = run_dir / ADDRESS_FILE
    address.unlink(missing_ok=True)
    procs: dict[str, subprocess.Popen] = {}
    if uri is None:
        uri = run_dir / URI_FILE
        procs["ompi_server"] = start_ompi_server(run_dir, **popen)
    env = mpi_environ()
    env.setdefault(SECRET_ENV, new_secret())  # this deployment's; shard 0 writes it in the connection file
    with open(run_dir / "server.log", "w") as server_log:
        servers = subprocess.Popen(
            ["mpiexec", "--ompi-server", f"file:{uri}", "-x", SECRET_ENV, "-n", str(shards), *server_command(),
             "--address", str(address), "--ompi-server-uri", str(uri), *server_args],
            stdout=server_log, stderr=subprocess.STDOUT, env=env, start_new_session=True, **popen)
    procs["servers"] = servers
    (run_dir / PIDS_FILE).write_text(json.dumps({name: proc.pid for name, proc in procs.items()}))
    try:
        _wait_for(address, timeout, servers)
    except SystemExit:
        _stop_pids(run_dir)
        print((run_dir / "server.log").read_text(), file=sys.stderr)
        raise
    return procs


def cmd_start(args: argparse.Namespace) -> int:
    """Start ompi-server and the server ranks in the background; write DIR/address."""
    run_dir = Path(args.dir).resolve()
    start_servers(run_dir, args.shards, args.server_args.split(), args.timeout)
    print(f"export MPISTAGE_ADDRESS={run_dir / ADDRESS_FILE}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """A client job (mpiexec) that can connect to the servers started with ``start``."""
    run_dir = Path(args.dir).resolve()
    env = mpi_environ()
    env["MPISTAGE_ADDRESS"] = str(run_dir / ADDRESS_FILE)
    cmd = ["mpiexec", "--ompi-server", f"file:{run_dir / URI_FILE}", "-x", "MPISTAGE_ADDRESS",
           "-n", str(args.n), *_strip_dashes(args.command)]
    return subprocess.call(cmd, env=env)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _stop_pids(run_dir: Path, grace: float = 10.0) -> bool:
    """SIGTERM the servers, then ompi-server; SIGKILL what outlives ``grace``. True if none had to be."""
    pids_path = run_dir / PIDS_FILE
    if not pids_path.exists():
        return True
    pids = json.loads(pids_path.read_text())
    clean = True
    for name in ("servers", "ompi_server"):
        pid = pids.get(name)
        if pid is None or not _alive(pid):
            continue
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
            clean = False
    pids_path.unlink(missing_ok=True)
    (run_dir / ADDRESS_FILE).unlink(missing_ok=True)
    return clean


def cmd_stop(args: argparse.Namespace) -> int:
    """SIGTERM the servers (they snapshot if configured and exit), then ompi-server."""
    if _stop_pids(Path(args.dir).resolve(), args.timeout):
        return 0
    print("mpistage: the servers did not stop on SIGTERM and were killed", file=sys.stderr)
    return 1


def cmd_info(args: argparse.Namespace) -> int:
    from .client import Client

    for shard in Client(address=str(Path(args.dir).resolve() / ADDRESS_FILE)).get_server_info():
        print(json.dumps(shard))
    return 0


def cmd_bridge(args: argparse.Namespace) -> int:
    """The ADIOS2 bridge in the servers (docs/adios2.md): open an export (and write ``--steps``
    steps), write steps, start an ingest, or stop one; prints each reply as JSON."""
    from .client import Client
    from .errors import MpistageError

    params = {}
    for kv in args.param:
        if "=" not in kv:
            print(f"mpistage: --param {kv!r}: expected KEY=VALUE", file=sys.stderr)
            return 2
        key, value = kv.split("=", 1)
        params[key] = value
    if args.action in ("export", "ingest") and not (args.engine and args.path):
        print(f"mpistage: bridge {args.action} needs --engine and --path", file=sys.stderr)
        return 2
    client = Client(address=str(Path(args.dir).resolve() / ADDRESS_FILE))
    try:
        if args.action == "export":
            print(json.dumps({"paths": client.bridge_export(args.name, args.engine, args.path, args.tensors,
                                                            args.datasets, params)}), flush=True)
        elif args.action == "ingest":
            client.bridge_ingest(args.name, args.engine, args.path, args.prefix, args.step_keys, args.variables,
                                 args.timeout, args.steps, params)
            print(json.dumps({"ingesting": args.path}), flush=True)
        elif args.action == "stop":
            for report in client.bridge_stop(args.name, args.wait):
                print(json.dumps(report), flush=True)
        if args.action in ("export", "step"):
            count = args.steps if args.steps is not None else (1 if args.action == "step" else 0)
            for step in range(count):
                if step:
                    time.sleep(args.interval)
                print(json.dumps(client.bridge_step(args.name)), flush=True)
    except MpistageError as exc:
        print(f"mpistage: bridge {args.action} {args.name!r}: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_experiment_status(args: argparse.Namespace) -> int:
    """Print the state of an experiment from its directory (written by ``Experiment``)."""
    from .launcher.state import format_state, read_state

    try:
        state = read_state(Path(args.exp_path))
    except (FileNotFoundError, ValueError) as exc:
        print(f"mpistage: {exc}", file=sys.stderr)
        return 2
    print(format_state(state))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mpistage", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("launch", help="run servers and an application as one MPMD job")
    s.add_argument("--servers", type=int, default=1)
    s.add_argument("-n", type=int, default=1, help="application ranks")
    s.add_argument("--server-args", default="", help="options for mpistage-server, quoted")
    s.add_argument("command", nargs=argparse.REMAINDER)
    s.set_defaults(fn=cmd_launch)
    s = sub.add_parser("start", help="start servers for client jobs to connect to")
    s.add_argument("--shards", type=int, default=1)
    s.add_argument("--dir", default="mpistage-run")
    s.add_argument("--server-args", default="", help="options for mpistage-server, quoted")
    s.add_argument("--timeout", type=float, default=60)
    s.set_defaults(fn=cmd_start)
    s = sub.add_parser("run", help="run a client job connected to started servers")
    s.add_argument("--dir", default="mpistage-run")
    s.add_argument("-n", type=int, default=1)
    s.add_argument("command", nargs=argparse.REMAINDER)
    s.set_defaults(fn=cmd_run)
    s = sub.add_parser("stop", help="stop started servers")
    s.add_argument("--dir", default="mpistage-run")
    s.add_argument("--timeout", type=float, default=20)
    s.set_defaults(fn=cmd_stop)
    s = sub.add_parser("info", help="print each shard's statistics")
    s.add_argument("--dir", default="mpistage-run")
    s.set_defaults(fn=cmd_info)
    s = sub.add_parser("bridge", help="ADIOS2 bridge in the servers: export keys, ingest a stream, stop")
    s.add_argument("action", choices=["export", "step", "ingest", "stop"],
                   help="export: open an export (and write --steps steps); step: write steps of an open export; "
                        "ingest: start reading a stream into the store; stop: end an export or ingest")
    s.add_argument("--dir", default="mpistage-run")
    s.add_argument("--name", required=True, help="the bridge's name")
    s.add_argument("--engine", choices=["BP5", "SST"], help="export, ingest: the ADIOS2 engine")
    s.add_argument("--path", help="export, ingest: the file or stream (an export adds .shard<k>)")
    s.add_argument("--param", action="append", default=[], metavar="K=V", help="an ADIOS2 engine parameter")
    s.add_argument("--tensors", nargs="*", default=[], help="export: tensor keys or patterns ('sim.*')")
    s.add_argument("--datasets", nargs="*", default=[], help="export: dataset keys or patterns")
    s.add_argument("--steps", type=int, help="export (default 0), step (default 1): steps to write; ingest: at most")
    s.add_argument("--interval", type=float, default=0.0, help="export, step: seconds between steps")
    s.add_argument("--prefix", default="", help="ingest: prefix of the store keys")
    s.add_argument("--step-keys", action="store_true", help="ingest: a key per step (<prefix><name>.<step>)")
    s.add_argument("--variables", nargs="*", default=[], help="ingest: only these variables (names or patterns)")
    s.add_argument("--timeout", type=float, default=60.0, help="ingest: seconds to wait for the writer and each step")
    s.add_argument("--wait", type=float, default=0.0,
                   help="stop: seconds an ingest may run on until its stream ends by itself")
    s.set_defaults(fn=cmd_bridge)
    s = sub.add_parser("experiment", help="inspect an experiment (mpistage.Experiment)")
    esub = s.add_subparsers(dest="experiment_cmd", required=True)
    e = esub.add_parser("status", help="status of every member, read from the experiment's directory")
    e.add_argument("exp_path")
    e.set_defaults(fn=cmd_experiment_status)
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    sys.exit(args.fn(args))


if __name__ == "__main__":
    main()
