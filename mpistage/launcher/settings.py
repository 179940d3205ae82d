"""How to run an entity: the executable, its arguments, its ranks and its environment."""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping
from typing import Any


def _as_list(args: str | Iterable[str] | None) -> list[str]:
    if args is None:
        return []
    if isinstance(args, str):
        return shlex.split(args)
    return [str(a) for a in args]


def parse_walltime(text: str) -> float:
    """``"HH:MM:SS"`` (SmartSim's format) or a number of seconds, as seconds."""
    parts = str(text).split(":")
    if len(parts) > 3 or not all(p.strip().replace(".", "", 1).isdigit() for p in parts):
        raise ValueError(f"walltime {text!r} is not HH:MM:SS or seconds")
    seconds = 0.0
    for part in parts:
        seconds = seconds * 60 + float(part)
    return seconds


class RunSettings:
    """SmartSim's ``RunSettings``: ``exe`` with ``exe_args``, ``set_tasks(n)`` ranks, ``env_vars``.

    ``run_command`` and ``run_args`` are accepted for compatibility; the experiment's launcher
    decides how ranks are started (``run_args`` are passed to ``mpiexec`` by the mpiexec launcher,
    as ``--name value`` options, and are ignored by the spawn launcher)."""

    def __init__(self, exe: str, exe_args: str | Iterable[str] | None = None, run_command: str = "",
                 run_args: Mapping[str, Any] | None = None, env_vars: Mapping[str, Any] | None = None,
                 **kwargs: Any) -> None:
        if not exe:
            raise ValueError("RunSettings needs an executable")
        self.exe = str(exe)
        self.exe_args = _as_list(exe_args)
        self.run_command = run_command
        self.run_args: dict[str, Any] = dict(run_args or {})
        self.env_vars: dict[str, str] = {str(k): str(v) for k, v in (env_vars or {}).items()}
        self.tasks = 1
        self.nodes: int | None = None
        self.tasks_per_node: int | None = None
        self.walltime: float | None = None
        self.extra = kwargs

    def set_tasks(self, tasks: int) -> None:
        """The number of MPI ranks of each entity run with these settings."""
        if int(tasks) < 1:
            raise ValueError(f"set_tasks needs at least one task, not {tasks}")
        self.tasks = int(tasks)

    def set_tasks_per_node(self, tasks_per_node: int) -> None:
        """Accepted for SmartSim compatibility; one node here, so only ``set_tasks`` counts."""
        self.tasks_per_node = int(tasks_per_node)

    def set_nodes(self, nodes: int) -> None:
        """Accepted for SmartSim compatibility (recorded; members run on the driver's allocation)."""
        self.nodes = int(nodes)

    def set_walltime(self, walltime: str | float) -> None:
        """Stop (and mark ``FAILED``) a member still running after ``walltime`` (``HH:MM:SS`` or seconds)."""
        self.walltime = parse_walltime(str(walltime))

    def add_exe_args(self, args: str | Iterable[str]) -> None:
        self.exe_args.extend(_as_list(args))

    def update_env(self, env_vars: Mapping[str, Any]) -> None:
        self.env_vars.update({str(k): str(v) for k, v in env_vars.items()})

    def mpiexec_args(self) -> list[str]:
        """``run_args`` as ``mpiexec`` options: ``{"map-by": "core"}`` -> ``--map-by core``; None: a flag."""
        out: list[str] = []
        for name, value in self.run_args.items():
            out.append(f"--{name}" if len(name) > 1 else f"-{name}")
            if value is not None:
                out.append(str(value))
        return out

    def command(self) -> list[str]:
        """The member's own command line (without a launcher in front)."""
        return [self.exe, *self.exe_args]

    def copy(self) -> RunSettings:
        new = RunSettings(self.exe, list(self.exe_args), self.run_command, dict(self.run_args),
                          dict(self.env_vars), **self.extra)
        new.tasks, new.walltime = self.tasks, self.walltime
        new.nodes, new.tasks_per_node = self.nodes, self.tasks_per_node
        return new

    def __repr__(self) -> str:
        return f"RunSettings({shlex.join(self.command())!r}, tasks={self.tasks})"
