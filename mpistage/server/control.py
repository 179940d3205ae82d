"""The control operations of a shard: INFO (statistics as JSON), SAVE (a snapshot on request) and
SHUTDOWN. No MPI here: each part of the server reports itself through a small ``report()``."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from ..errors import BadArgumentError
from ..protocol import Op, Status
from .handlers import Handler, Reply, Request
from .store import ShardStore
from .store.snapshot import write_snapshot


class Reports(Protocol):
    def report(self) -> dict[str, Any]: ...


class ControlLoop(Reports, Protocol):
    """What the control handlers need of the progress loop."""

    stop_after_last_job: bool

    def defer(self, req: Request, rep: Reply) -> None: ...


def info_reply(info: dict[str, Any]) -> Reply:
    """The INFO reply: one field of UTF-8 JSON (server to client only, never parsed by a server)."""
    return Reply(fields=[json.dumps(info).encode()])


class ControlHandlers:
    """INFO, SAVE and SHUTDOWN of one shard."""

    def __init__(self, shard: int, nshards: int, store: ShardStore, loop: ControlLoop, engine: Reports,
                 snapshot_dir: Path | None) -> None:
        self.shard, self.nshards = shard, nshards
        self.store = store
        self.loop = loop
        self.engine = engine
        self.snapshot_dir = snapshot_dir
        self.started = time.time()

    def table(self) -> dict[int, Handler]:
        return {Op.INFO: self.info, Op.SAVE: self.save, Op.SHUTDOWN: self.shutdown}

    def info(self, _req: Request) -> Reply:
        return info_reply({"shard": self.shard, "nshards": self.nshards, **self.store.report(),
                           **self.loop.report(), "uptime_s": round(time.time() - self.started, 3),
                           "engine": self.engine.report()})

    def save(self, req: Request) -> None:
        """Copy the store's tables now (this is the loop thread), write the file on a thread,
        and reply when it is written."""
        if self.snapshot_dir is None:
            raise BadArgumentError("this server was started without --snapshot PATH")
        contents = self.store.contents()

        def work() -> None:
            try:
                path = write_snapshot(contents, self.snapshot_dir, self.shard, self.nshards)
                self.loop.defer(req, Reply(fields=[str(path).encode()]))
            except Exception as exc:  # reported to the caller, the shard goes on
                self.loop.defer(req, Reply(Status.INTERNAL_ERROR, [f"snapshot failed: {exc}".encode()]))

        threading.Thread(target=work, name="mpistage-snapshot", daemon=True).start()

    def shutdown(self, _req: Request) -> Reply:
        """Stop once every connected job has said goodbye (the requester says it right after)."""
        self.loop.stop_after_last_job = True
        return Reply()

    def final_snapshot(self) -> None:
        """At shutdown (the loop has ended): write the snapshot, when the server keeps one."""
        if self.snapshot_dir is not None:
            write_snapshot(self.store.contents(), self.snapshot_dir, self.shard, self.nshards)
