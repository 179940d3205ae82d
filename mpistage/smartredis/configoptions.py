"""``ConfigOptions``: where a SmartRedis ``Client`` takes its settings (``SSDB``, ``SSKEYIN``,
``SSKEYOUT``...), from the environment with an optional suffix, plus per-object overrides."""

from __future__ import annotations

import os

from ..errors import BadArgumentError, KeyNotFoundError, ServerRuntimeError, typecheck


class ConfigOptions:
    """Settings read from the environment: make one with :meth:`create_from_environment` (an
    object made with ``ConfigOptions()`` has no source, and its methods raise RedisRuntimeError,
    as in SmartRedis). With a suffix ``s``, option ``NAME`` is read from ``NAME_s``."""

    def __init__(self) -> None:
        self._suffix: str | None = None
        self._overrides: dict[str, int | str] = {}

    @classmethod
    def create_from_environment(cls, db_suffix: str) -> ConfigOptions:
        """Options from environment variables, ``_{db_suffix}`` appended to each name when
        ``db_suffix`` is not empty."""
        typecheck(db_suffix, "db_suffix", str)
        opts = cls()
        opts._suffix = db_suffix
        return opts

    def _variable(self, option_name: str) -> str:
        typecheck(option_name, "option_name", str)
        if self._suffix is None:
            raise ServerRuntimeError("this ConfigOptions was not made by a factory method "
                                     "(use ConfigOptions.create_from_environment)")
        return f"{option_name}_{self._suffix}" if self._suffix else option_name

    def _value(self, option_name: str) -> int | str:
        variable = self._variable(option_name)
        if option_name in self._overrides:
            return self._overrides[option_name]
        if variable not in os.environ:
            raise KeyNotFoundError(f"configuration option {option_name} is not set (${variable})")
        return os.environ[variable]

    def get_integer_option(self, option_name: str) -> int:
        """The option's value as an int; RedisKeyError when it is not set."""
        value = self._value(option_name)
        try:
            return int(value)
        except ValueError:
            raise BadArgumentError(f"configuration option {option_name}={value!r} is not an integer") from None

    def get_string_option(self, option_name: str) -> str:
        """The option's value; RedisKeyError when it is not set."""
        return str(self._value(option_name))

    def is_configured(self, option_name: str) -> bool:
        """Whether the option is set (in the environment or by an override)."""
        return option_name in self._overrides or self._variable(option_name) in os.environ

    def override_integer_option(self, option_name: str, value: int) -> None:
        """Set the option for this object only."""
        self._variable(option_name)
        typecheck(value, "value", int)
        self._overrides[option_name] = value

    def override_string_option(self, option_name: str, value: str) -> None:
        """Set the option for this object only."""
        self._variable(option_name)
        typecheck(value, "value", str)
        self._overrides[option_name] = value

    def string_or_none(self, option_name: str) -> str | None:
        """The option's value, or None when it is not set (for ``Client``)."""
        return self.get_string_option(option_name) if self.is_configured(option_name) else None

    def __repr__(self) -> str:
        return f"ConfigOptions(suffix={self._suffix!r}, overrides={self._overrides!r})"
