"""``mpistage-server``: one server rank = one shard. Wires the store, the handlers, the engine and
the progress loop together, sets up the links to client jobs (MPMD world split and/or an
``MPI_Open_port`` for separately started jobs) and runs the loop.

One-sided window memory (connect mode only: MPMD links have no window) is bounded per shard by
``--window-cap``: each connecting job gets ``--rma-slot`` bytes per client rank, or less so the
shard's windows stay under the cap; below 256 KiB per rank the job gets no window and its
payloads travel point-to-point (docs/engine.md, "Server memory").

Server ranks spawned by a driver (the launcher's database, ``MPI_Comm_spawn``) stop when the driver
sends them a stop on their parent intercommunicator, as they do on SIGTERM, and end without an
``MPI_Finalize`` that would wait for vanished jobs (docs/launcher.md, "The database").
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .._mpi.bootstrap import parent_stop_arrived
from .._mpi.connfile import Address, deployment_secret, write_address
from .._mpi.links import LinkKind, hear_hello, setup_server_side, split_world
from ..mpienv import mpi
from ..protocol import PROTOCOL_VERSION, ROLE_SERVER
from .bridge import BridgeHandlers
from .control import ControlHandlers
from .engine import InferenceEngine
from .engine.runtime import add_engine_arguments, options_from
from .handlers import AdminHandlers, StoreHandlers
from .links import DEFAULT_WINDOW_CAP, SETUP_SECONDS, ServerLink, WindowBudget
from .loop import ProgressLoop
from .memory import keep_freed_memory
from .peer import PeerClient
from .store import ShardStore
from .store.snapshot import remove_stale_temporaries, restore_snapshot
from .wake import DEFAULT_REARM_SECONDS, AcceptRearmer

PEER_TIMEOUT_SECONDS = 60.0  # how long a shard waits for another shard to answer a transfer
PARENT_POLL_SECONDS = 0.1  # how often a spawned shard looks for its driver's stop
FINALIZE_SECONDS = 5.0  # a spawned shard's MPI_Finalize gets this long; then it exits (status 1)


def parse_size(text: str) -> int:
    """``512M``, ``2G``, ``1048576``... as bytes."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    text = text.strip().upper().removesuffix("B")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mpistage-server", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--address", default=None,
                   help="write a connection file here and accept separately started client jobs "
                        "(required when no client ranks share the world)")
    p.add_argument("--ompi-server-uri", default=None,
                   help="the ompi-server URI file, recorded in the connection file for singletons")
    p.add_argument("--max-memory", type=parse_size, default=0,
                   help="bytes a shard may hold (e.g. 4G); 0 = no cap")
    p.add_argument("--snapshot", type=Path, default=None,
                   help="directory: write every shard there at shutdown and on client.save()")
    p.add_argument("--restore", type=Path, default=None, help="snapshot directory to load at start")
    p.add_argument("--rma-slot", type=parse_size, default=16 << 20,
                   help="connect mode: bytes of one-sided window per client rank (0 disables RMA)")
    p.add_argument("--window-cap", type=parse_size, default=DEFAULT_WINDOW_CAP,
                   help="connect mode: bytes of one-sided window a shard may allocate over all connected "
                        "jobs (default 1G); a job's slot per rank shrinks to fit, and below 256K the job "
                        "has no window (its payloads go point-to-point)")
    p.add_argument("--payload-timeout", type=float, default=10.0,
                   help="seconds to wait for an announced payload before answering an error")
    p.add_argument("--accept-rearm", type=float, default=DEFAULT_REARM_SECONDS,
                   help="connect mode: seconds between shard 0's re-arms of its idle accept (Open MPI 4's accept "
                        "fails for good after ~5 min idle); 0 = never (default 120)")
    p.add_argument("--setup-timeout", type=float, default=SETUP_SECONDS["value"],
                   help="connect mode: seconds a connecting job has for its hello, and then for session setup; "
                        "past them it is let go or the setup abandoned (a job killed mid-connect) and "
                        "accepting goes on (default 30)")
    add_engine_arguments(p)  # --threads, --backends, --no-scripts, --allow-aoti, --model-timeout
    return p


class ShardServer:
    """One shard: its store, handlers, engine and progress loop, and their lifetime."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.MPI = mpi()
        self.args = args
        self.split = split_world(ROLE_SERVER)
        self.comm = self.split.local
        self.shard, self.nshards = self.comm.Get_rank(), self.comm.Get_size()
        self.store = ShardStore(max_bytes=args.max_memory)
        if args.snapshot:
            remove_stale_temporaries(args.snapshot, self.shard, self.nshards)
        if args.restore:
            restore_snapshot(self.store, args.restore, self.shard, self.nshards)
        store_handlers = StoreHandlers(self.store)
        handlers = store_handlers.table()
        self.loop = ProgressLoop(self.shard, handlers, args.payload_timeout, alloc=self.store.alloc,
                                 admit=store_handlers.admit)
        SETUP_SECONDS["value"] = args.setup_timeout
        self.loop.on_drop = lambda link, _why: link.abandon()  # its job is gone: no collective release
        # Engine traffic between shards: the same requests, on a communicator of the servers.
        peer = self.comm.Dup()
        self.loop.add_link(ServerLink(peer, LinkKind.PEER))
        node = self.comm.Split_type(self.MPI.COMM_TYPE_SHARED)
        self.engine = InferenceEngine(
            self.store, self.loop, PeerClient(peer, PEER_TIMEOUT_SECONDS, lambda: self.engine.stopping),
            self.shard, self.nshards, local_rank=node.Get_rank(), options=options_from(args))
        node.Free()
        self.control = ControlHandlers(self.shard, self.nshards, self.store, self.loop, self.engine,
                                       args.snapshot)
        handlers.update(self.engine.table(handlers))
        handlers.update(self.control.table())
        self.bridges = BridgeHandlers(self.shard, self.nshards, self.store, self.loop)  # ADIOS2 bridge
        handlers.update(self.bridges.table())
        handlers.update(AdminHandlers(self.shard, self.nshards, self.store, self.engine).table())
        self.budget = WindowBudget(args.window_cap)
        self.port: str | None = None
        self.accept_comm: Any = None
        self.rearmer: AcceptRearmer | None = None
        self.spawned = self.MPI.Comm.Get_parent() != self.MPI.COMM_NULL  # by a driver (MPI_Comm_spawn)

    def open_port(self, address_path: str) -> None:
        MPI = self.MPI
        self.port = MPI.Open_port() if self.shard == 0 else None
        self.accept_comm = self.comm.Dup()
        if self.shard == 0:
            write_address(address_path, Address(self.port, self.nshards, PROTOCOL_VERSION,
                                                self.args.ompi_server_uri, secret=deployment_secret()))
        self.loop.start_accepting(self.accept_comm, self.port, self.args.rma_slot, self.budget)
        if self.shard == 0 and self.args.accept_rearm > 0:
            self.rearmer = AcceptRearmer(address_path, self.args.accept_rearm)
            self.rearmer.start()

    def watch_parent(self) -> None:
        """Spawned by a driver: end the loop (as SIGTERM does) when the driver's stop comes
        through the parent intercommunicator; a thread that looks every ``PARENT_POLL_SECONDS``."""
        if not self.spawned:
            return
        parent = self.MPI.Comm.Get_parent()

        def watch() -> None:
            while not self.loop.stopping:
                if parent_stop_arrived(parent):
                    print(f"mpistage-server shard {self.shard}: stopping: the driver that spawned it said stop",
                          file=sys.stderr, flush=True)
                    self.loop.stopping = True
                    return
                time.sleep(PARENT_POLL_SECONDS)

        threading.Thread(target=watch, name="mpistage-parent-stop", daemon=True).start()

    def serve(self) -> None:
        self.watch_parent()
        if self.split.remote is not None:
            hear_hello(self.split.remote)
            self.loop.add_link(ServerLink.of(setup_server_side(self.split.remote, LinkKind.MPMD, 0)))
        address = self.args.address
        if address is None and self.split.remote is None:
            raise SystemExit("mpistage-server: no client ranks in this job and no --address "
                             "to accept client jobs on")
        if address is not None:
            self.open_port(address)
        else:
            self.loop.stop_after_last_job = True
        stopped = False
        try:
            self.loop.run()
            stopped = True
        finally:
            if self.rearmer is not None:
                self.rearmer.stop()
            self.bridges.close()
            self.control.final_snapshot()
            self.engine.close()
            self.loop.shutdown_links(address)
            if self.shard == 0 and self.port is not None:
                self.MPI.Close_port(self.port)
                if address is not None and stopped:  # only a real shutdown removes the connection file
                    Path(address).unlink(missing_ok=True)


def end_spawned(server: ShardServer) -> None:
    """How a spawned shard ends MPI. ``MPI_Finalize`` frees every window still allocated, and the
    windows of links dropped because their job vanished (``ServerLink.abandon``) are collective with
    processes that are gone: Finalize would wait for good (seen: ``ompi_win_finalize`` -> the
    ``osc_ucx`` barrier), and the launcher would SIGKILL the shard. So a shard that dropped links
    exits 0 without Finalize (its work is done: the loop ended, snapshots are written); otherwise it
    finalizes, and a Finalize still running after ``FINALIZE_SECONDS`` ends the process with
    status 1 and the threads' tracebacks on stderr (faulthandler's watchdog needs no GIL, which
    mpi4py holds in Finalize). ``mpiexec``'s servers are ended by ``mpiexec`` on SIGTERM instead."""
    sys.stdout.flush()
    if server.loop.dropped:
        print(f"mpistage-server shard {server.shard}: exiting without MPI_Finalize: it would wait for the "
              f"{len(server.loop.dropped)} dropped links' jobs, which are gone", file=sys.stderr, flush=True)
        os._exit(0)
    faulthandler.dump_traceback_later(FINALIZE_SECONDS, exit=True)
    server.MPI.Finalize()
    faulthandler.cancel_dump_traceback_later()


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    keep_freed_memory()
    server = ShardServer(args)
    server.serve()
    if not server.spawned:
        server.engine.exit_if_stuck(server.MPI.Finalize)  # a stuck model or script thread: exit without aborting
        return
    server.engine.exit_if_stuck(lambda: end_spawned(server))
    end_spawned(server)
