"""The experiment's state in its directory (``exp_path/.mpistage/experiment.json``), written on
every change, read by ``mpistage experiment status <exp_path>``."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

STATE_DIR = ".mpistage"
STATE_FILE = "experiment.json"


def state_path(exp_path: Path) -> Path:
    return exp_path / STATE_DIR / STATE_FILE


def write_state(exp_path: Path, state: dict[str, Any]) -> None:
    """Write atomically (a reader never sees half a file)."""
    path = state_path(exp_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".experiment-")
    with os.fdopen(fd, "w") as fh:
        json.dump(state, fh, indent=1)
    os.replace(tmp, path)


def read_state(exp_path: Path) -> dict[str, Any]:
    path = state_path(exp_path)
    if not path.exists():
        raise FileNotFoundError(f"{exp_path} has no experiment state ({STATE_DIR}/{STATE_FILE})")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not an experiment state file: {exc}") from exc


def _driver_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def table(rows: list[dict[str, Any]], now: float | None = None) -> str:
    """Member, status, exit status, run time, last line of output, as aligned columns."""
    now = now or time.time()
    head = ("member", "status", "exit", "time", "last output")
    body = []
    for r in rows:
        started, ended = r.get("started"), r.get("ended")
        runtime = f"{(ended or now) - started:.1f}s" if started else "-"
        rc = r.get("returncode")
        last = (r.get("reason") or r.get("last_line") or "")[:60]
        body.append((r["name"], r["status"], "-" if rc is None else str(rc), runtime, last))
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [head, *body]]
    return "\n".join(lines)


def format_state(state: dict[str, Any]) -> str:
    """What ``mpistage experiment status`` prints."""
    alive = _driver_alive(state.get("driver_pid"))
    head = (f"experiment {state['name']} ({state['exp_path']}), launcher {state['launcher']}, "
            f"driver pid {state.get('driver_pid')} {'running' if alive else 'gone'}")
    db = state.get("database")
    lines = [head]
    if db:
        lines.append(f"database {db['name']}: {db['status']}, {db['shards']} shards, address {db['address']}")
    rows = state.get("members", [])
    if not alive:
        rows = [dict(r, status=r["status"] + " (driver gone)") if r["status"] == "Running" else r for r in rows]
    lines.append(table(rows) if rows else "no members started")
    return "\n".join(lines)
