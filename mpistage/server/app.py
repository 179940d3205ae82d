"""``mpistage-server``: one server rank = one shard. Sets up the store, the links to client jobs
(MPMD world split and/or an ``MPI_Open_port`` for separately started jobs) and runs the loop."""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path
from typing import Any

from .._mpi.connfile import Address, write_address
from .._mpi.links import LinkKind, hear_hello, setup_server_side, split_world
from ..errors import BadArgumentError
from ..mpienv import mpi
from ..protocol import PROTOCOL_VERSION, ROLE_SERVER, Op, Status
from ..store import ShardStore
from .engine import InferenceEngine
from .handlers import Reply, Request, StoreHandlers, info_reply
from .loop import ProgressLoop
from .memory import keep_freed_memory
from .session import ClientLink
from .snapshot import restore_snapshot, write_snapshot


def parse_size(text: str) -> int:
    """``512M``, ``2G``, ``1048576``... as bytes."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    text = text.strip().upper().removesuffix("B")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mpistage-server", description=__doc__)
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
                   help="bytes of one-sided window per client rank (0 disables RMA)")
    p.add_argument("--payload-timeout", type=float, default=10.0,
                   help="seconds to wait for an announced payload before answering an error")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    return p


class ShardServer:
    """One shard: its store, handlers and progress loop."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.MPI = mpi()
        self.args = args
        self.split = split_world(ROLE_SERVER)
        self.comm = self.split.local
        self.shard, self.nshards = self.comm.Get_rank(), self.comm.Get_size()
        self.store = ShardStore(max_bytes=args.max_memory)
        if args.restore:
            restore_snapshot(self.store, args.restore, self.shard, self.nshards)
        handlers = StoreHandlers(self.store).table()
        handlers.update({Op.INFO: self.info, Op.SAVE: self.save, Op.SHUTDOWN: self.shutdown})
        self.loop = ProgressLoop(self.shard, self.nshards, handlers, args.payload_timeout)
        # Engine traffic between shards: the same requests, on a communicator of the servers.
        peer = self.comm.Dup()
        self.loop.add_link(ClientLink(peer, LinkKind.PEER))
        node = self.comm.Split_type(self.MPI.COMM_TYPE_SHARED)
        self.engine = InferenceEngine(self.store, self.loop, peer, self.shard, self.nshards,
                                      local_rank=node.Get_rank())
        node.Free()
        handlers.update(self.engine.table(handlers))
        self.port: str | None = None
        self.accept_comm: Any = None
        self.started = time.time()

    # ------------------------------------------------------------ control handlers
    def info(self, _req: Request) -> Reply:
        s = self.store
        return info_reply({
            "shard": self.shard, "nshards": self.nshards, "keys": s.nkeys,
            "tensors": len(s.tensors), "datasets": len(s.datasets), "lists": len(s.lists),
            "bytes_used": s.used_bytes, "max_bytes": s.max_bytes,
            "requests": self.loop.stats.requests, "errors": self.loop.stats.errors,
            "client_jobs": sum(link.kind != LinkKind.PEER for link in self.loop.links),
            "uptime_s": round(time.time() - self.started, 3), "engine": self.engine.stats(),
        })

    def save(self, req: Request) -> Reply | None:
        if self.args.snapshot is None:
            return Reply.error(BadArgumentError("this server was started without --snapshot PATH"))

        def work() -> None:
            try:
                path = write_snapshot(self.store, self.args.snapshot, self.shard, self.nshards)
                self.loop.defer(req, Reply(fields=[str(path).encode()]))
            except Exception as exc:  # reported to the caller, the shard goes on
                self.loop.defer(req, Reply(Status.INTERNAL_ERROR, [f"snapshot failed: {exc}".encode()]))

        threading.Thread(target=work, name="mpistage-snapshot", daemon=True).start()
        return None

    def shutdown(self, _req: Request) -> Reply:
        """Stop once every connected job has said goodbye (the requester says it right after)."""
        self.loop.stop_when_idle_links = True
        return Reply()

    # ------------------------------------------------------------ lifetime
    def open_port(self, address_path: str) -> None:
        MPI = self.MPI
        self.port = MPI.Open_port() if self.shard == 0 else None
        self.accept_comm = self.comm.Dup()
        if self.shard == 0:
            write_address(address_path, Address(self.port, self.nshards, PROTOCOL_VERSION,
                                                self.args.ompi_server_uri))
        self.loop.start_accepting(self.accept_comm, self.port, self.args.rma_slot)

    def serve(self) -> None:
        if self.split.remote is not None:
            hear_hello(self.split.remote)
            link = setup_server_side(self.split.remote, LinkKind.MPMD, self.args.rma_slot)
            self.loop.add_link(ClientLink.of(link))
        address = self.args.address
        if address is None and self.split.remote is None:
            raise SystemExit("mpistage-server: no client ranks in this job and no --address "
                             "to accept client jobs on")
        if address is not None:
            self.open_port(address)
        else:
            self.loop.stop_when_idle_links = True
        try:
            self.loop.run()
        finally:
            if self.args.snapshot is not None:
                write_snapshot(self.store, self.args.snapshot, self.shard, self.nshards)
            self.engine.close()
            self.loop.shutdown_links(address)
            if self.shard == 0 and self.port is not None:
                self.MPI.Close_port(self.port)
                if address is not None:
                    Path(address).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    keep_freed_memory()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    ShardServer(args).serve()
