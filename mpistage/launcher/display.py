"""What a person sees while ``start(block=True)`` runs: a live table on a terminal, plain lines
(one per status change, and a count every ``interval`` seconds) otherwise."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import TextIO

from .jobs import Job
from .state import table


def rows(jobs: Sequence[Job]) -> list[dict]:
    return [dict(j.to_dict(), last_line=j.last_line()) for j in jobs]


class Progress:
    """Call :meth:`update` periodically with the jobs being waited for; :meth:`close` at the end."""

    def __init__(self, stream: TextIO | None = None, interval: float = 10.0) -> None:
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty()
        self.interval = interval
        self._drawn = 0
        self._seen: dict[str, str] = {}
        self._last = 0.0

    def update(self, jobs: Sequence[Job]) -> None:
        if self.live:
            text = table(rows(jobs))
            if self._drawn:
                self.stream.write(f"\x1b[{self._drawn}F\x1b[J")
            self.stream.write(text + "\n")
            self._drawn = text.count("\n") + 1
        else:
            for j in jobs:
                if self._seen.get(j.name) != j.status.value:
                    self._seen[j.name] = j.status.value
                    extra = f" (exit {j.returncode}{', ' + j.reason if j.reason else ''})" if j.status.finished else ""
                    self.stream.write(f"{time.strftime('%H:%M:%S')} {j.name}: {j.status.value}{extra}\n")
            now = time.monotonic()
            if now - self._last >= self.interval:
                self._last = now
                counts: dict[str, int] = {}
                for j in jobs:
                    counts[j.status.value] = counts.get(j.status.value, 0) + 1
                self.stream.write(f"{time.strftime('%H:%M:%S')} " +
                                  ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())) + "\n")
        self.stream.flush()
