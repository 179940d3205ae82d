"""The states of a launched entity, with SmartSim's names and string values."""

from __future__ import annotations

from enum import Enum


class Status(str, Enum):
    """What an experiment knows about a model, an ensemble member or a database.

    The string values are SmartSim 0.8's (``SmartSimStatus``), so code comparing against them
    (``status == "Completed"``) keeps working."""

    NEW = "New"
    RUNNING = "Running"
    COMPLETED = "Completed"
    FAILED = "Failed"
    CANCELLED = "Cancelled"
    NEVER_STARTED = "NeverStarted"

    def __str__(self) -> str:
        return self.value

    @property
    def finished(self) -> bool:
        """True for the states an entity does not leave: completed, failed, cancelled, never started."""
        return self in TERMINAL


TERMINAL = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED, Status.NEVER_STARTED})
