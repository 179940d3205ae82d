"""``SRObject``: what SmartRedis's Client, Dataset and LogContext share, the logging methods."""

from __future__ import annotations

from ..errors import typecheck
from .logger import SRLoggingLevel, log_data, log_error, log_warning


class SRObject:
    """An object that logs under a context (its name)."""

    def __init__(self, context: str) -> None:
        typecheck(context, "context", str)
        self._log_context = context

    def log_data(self, level: SRLoggingLevel, data: str) -> None:
        """Log ``data`` under this object's context when the configured level is at least ``level``."""
        log_data(self._log_context, level, data)

    def log_warning(self, level: SRLoggingLevel, data: str) -> None:
        """As :meth:`log_data`, marked as a warning."""
        log_warning(self._log_context, level, data)

    def log_error(self, level: SRLoggingLevel, data: str) -> None:
        """As :meth:`log_data`, marked as an error."""
        log_error(self._log_context, level, data)
