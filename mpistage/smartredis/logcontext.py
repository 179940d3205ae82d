"""``LogContext``: a name to log under, for code that has no Client or Dataset at hand."""

from __future__ import annotations

from .srobject import SRObject


class LogContext(SRObject):
    """Logs with :meth:`log_data`, :meth:`log_warning`, :meth:`log_error` under ``context``."""

    def __init__(self, context: str) -> None:
        super().__init__(context)

    def __repr__(self) -> str:
        return f"LogContext({self._log_context!r})"
