"""SmartRedis's logging: the levels ``LLQuiet`` < ``LLInfo`` < ``LLDebug`` < ``LLDeveloper`` and
``log_data``/``log_warning``/``log_error``.

As in SmartRedis, ``SR_LOG_LEVEL`` (QUIET, INFO, DEBUG or DEVELOPER; INFO when unset) chooses what
is written and ``SR_LOG_FILE`` where (standard output when unset); both are read at each call. A
message of level ``level`` is written when the configured level is at least ``level`` and not
QUIET. Each line is ``<context>@<UTC time>:<text>``, warnings and errors marked as such.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from enum import IntEnum

from ..errors import typecheck


class SRLoggingLevel(IntEnum):
    """SmartRedis's logging levels."""

    LLQuiet = 1
    LLInfo = 2
    LLDebug = 3
    LLDeveloper = 4


LLQuiet, LLInfo, LLDebug, LLDeveloper = (SRLoggingLevel.LLQuiet, SRLoggingLevel.LLInfo,
                                         SRLoggingLevel.LLDebug, SRLoggingLevel.LLDeveloper)
_BY_NAME = {"QUIET": LLQuiet, "INFO": LLInfo, "DEBUG": LLDebug, "DEVELOPER": LLDeveloper}
_lock = threading.Lock()


def configured_level() -> SRLoggingLevel:
    """The level ``SR_LOG_LEVEL`` names (INFO when unset or unknown)."""
    return _BY_NAME.get(os.environ.get("SR_LOG_LEVEL", "INFO").strip().upper(), LLInfo)


def _log(context: str, level: SRLoggingLevel, data: str, mark: str) -> None:
    typecheck(context, "context", str)
    typecheck(level, "level", SRLoggingLevel)
    typecheck(data, "data", str)
    threshold = configured_level()
    if threshold == LLQuiet or level > threshold:
        return
    line = f"{context}@{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime())}:{mark}{data}\n"
    path = os.environ.get("SR_LOG_FILE")
    with _lock:
        if path:
            with open(path, "a", encoding="utf-8") as out:
                out.write(line)
        else:
            sys.stdout.write(line)
            sys.stdout.flush()


def log_data(context: str, level: SRLoggingLevel, data: str) -> None:
    """Write ``data`` under ``context`` when the configured level is at least ``level``."""
    _log(context, level, data, "")


def log_warning(context: str, level: SRLoggingLevel, data: str) -> None:
    """As :func:`log_data`, marked as a warning."""
    _log(context, level, data, "WARNING: ")


def log_error(context: str, level: SRLoggingLevel, data: str) -> None:
    """As :func:`log_data`, marked as an error."""
    _log(context, level, data, "ERROR: ")
