"""What the engine scenarios share: a progress line per check and an assertion that a call raises."""

from collections.abc import Callable
from typing import Any


def check(what: str) -> None:
    """Say that the checks of ``what`` passed (the tests look for these lines)."""
    print("OK", what, flush=True)


def raises(exc_type: type, fn: Callable[..., Any], *args: Any, match: str = "", **kwargs: Any) -> str:
    """Call ``fn``; it must raise ``exc_type`` whose text contains ``match`` (any case). Returns the text."""
    try:
        fn(*args, **kwargs)
    except exc_type as exc:
        assert match.lower() in str(exc).lower(), f"{exc_type.__name__} {exc!r} lacks {match!r}"
        return str(exc)
    raise AssertionError(f"{fn.__name__}{args} did not raise {exc_type.__name__}")
