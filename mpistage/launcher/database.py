"""The database handle: SmartSim's ``Orchestrator``, here N mpistage server ranks (N shards)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..cli import ADDRESS_FILE
from .status import Status

#: SmartSim arguments that name Redis or batch-system things; accepted and ignored (docs/launcher.md).
IGNORED = ("port", "interface", "hosts", "run_command", "batch", "account", "time", "queue", "single_cmd",
           "threads_per_queue", "inter_op_threads", "intra_op_threads", "db_cpus")


class Orchestrator:
    """``db_nodes`` server ranks (= shards) started by ``Experiment.start(db)``.

    ``get_address()`` is a list (as in SmartSim) whose one element is the connection file that
    ``Client(address=...)`` takes; started members find it in ``$MPISTAGE_ADDRESS`` by themselves.
    ``server_args`` are extra ``mpistage-server`` options (``["--max-memory", "4G"]``)."""

    def __init__(self, path: Path, db_nodes: int = 1, db_identifier: str = "orchestrator",
                 server_args: list[str] | None = None, **kwargs: Any) -> None:
        if int(db_nodes) < 1:
            raise ValueError(f"db_nodes must be at least 1, not {db_nodes}")
        unknown = sorted(set(kwargs) - set(IGNORED))
        if unknown:
            raise TypeError(f"create_database got unexpected arguments {unknown}")
        self.name = db_identifier
        self.db_nodes = self.num_shards = int(db_nodes)
        self.path = path
        self.server_args = list(server_args or [])
        self.ignored = {k: v for k, v in kwargs.items() if v is not None}
        self.status = Status.NEVER_STARTED
        self.launcher: Any = None  # the Launcher that starts the server ranks (set by create_database)

    @property
    def address_file(self) -> Path:
        return self.path / ADDRESS_FILE

    def get_address(self) -> list[str]:
        """``[connection file]``; raises when the database is not running."""
        if not self.is_active():
            raise RuntimeError(f"database {self.name} is not running ({self.status.value})")
        return [str(self.address_file)]

    def is_active(self) -> bool:
        return self.status is Status.RUNNING and self.address_file.exists()

    @property
    def type(self) -> str:
        return "Orchestrator"

    def __repr__(self) -> str:
        return f"Orchestrator({self.name!r}, db_nodes={self.db_nodes}, {self.status.value})"
