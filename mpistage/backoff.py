"""The one waiting loop of mpistage: yield the core for a short while, then sleep, doubling the
sleep up to a bound. Ranks on an oversubscribed node must leave the cores to the ranks doing
work (docs/mpi.md), and a reply that arrives within microseconds must not wait a millisecond."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

SPIN_SECONDS = 50e-6  # yield (do not sleep) this long after the last progress
MIN_SLEEP = 20e-6  # then sleep, doubling from this...
MAX_SLEEP = 1e-3  # ...up to this


class Backoff:
    """Call :meth:`pause` each time a poll found nothing, :meth:`reset` when it found work."""

    __slots__ = ("spin_seconds", "max_sleep", "_spin_until", "_sleep")

    def __init__(self, spin_seconds: float = SPIN_SECONDS, max_sleep: float = MAX_SLEEP) -> None:
        self.spin_seconds = spin_seconds
        self.max_sleep = max_sleep
        self.reset()

    def reset(self) -> None:
        """Progress was made: spin again before sleeping."""
        self._spin_until = time.monotonic() + self.spin_seconds
        self._sleep = 0.0

    def pause(self) -> None:
        """Nothing to do yet: yield while spinning, else sleep a little longer than last time."""
        if time.monotonic() < self._spin_until:
            os.sched_yield()
            return
        self._sleep = min(self.max_sleep, max(2 * self._sleep, MIN_SLEEP))
        time.sleep(self._sleep)


def wait_until(ready: Callable[[], bool], timeout: float | None = None,
               stop: Callable[[], bool] | None = None) -> bool:
    """Poll ``ready`` with a :class:`Backoff` until it is true (returns True), ``timeout`` seconds
    pass or ``stop`` becomes true (returns False)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    backoff = Backoff()
    while not ready():
        if (deadline is not None and time.monotonic() > deadline) or (stop is not None and stop()):
            return False
        backoff.pause()
    return True
