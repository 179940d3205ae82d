"""SmartRedis's ``smartredis.util``: dtype names and the argument check."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import typecheck

__all__ = ["Dtypes", "init_default", "typecheck"]

_TENSOR = {"float64": "DOUBLE", "float32": "FLOAT", "uint8": "UINT8", "uint16": "UINT16",
           "int8": "INT8", "int16": "INT16", "int32": "INT32", "int64": "INT64"}
_METADATA = {"float64": "DOUBLE", "float32": "FLOAT", "uint32": "UINT32", "uint64": "UINT64",
             "int32": "INT32", "int64": "INT64"}
_TYPES: dict[str, type] = {"DOUBLE": np.float64, "FLOAT": np.float32, "UINT8": np.uint8,
                           "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
                           "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
                           "STRING": str}


class Dtypes:
    """SmartRedis's type names of numpy arrays and back."""

    @staticmethod
    def tensor_from_numpy(array: np.ndarray) -> str:
        """The SmartRedis tensor type name of ``array`` ("DOUBLE"...); TypeError when it has none."""
        try:
            return _TENSOR[str(array.dtype)]
        except KeyError:
            raise TypeError(f"Incompatible tensor type provided {array.dtype}") from None

    @staticmethod
    def metadata_from_numpy(array: np.ndarray) -> str:
        """The SmartRedis metadata type name of ``array``; TypeError when it has none."""
        try:
            return _METADATA[str(array.dtype)]
        except KeyError:
            raise TypeError(f"Incompatible metadata type provided {array.dtype}") from None

    @staticmethod
    def from_string(type_name: str) -> type:
        """The numpy type (or ``str``) of a SmartRedis type name ("FLOAT" is ``numpy.float32``)."""
        try:
            return _TYPES[type_name]
        except KeyError:
            raise TypeError(f"Unrecognized type name {type_name}") from None


def init_default(default: Any, init_value: Any, expected_type: Any = None) -> Any:
    """``default`` when ``init_value`` is None, else ``init_value`` (TypeError when it is not an
    ``expected_type``)."""
    if init_value is None:
        return default
    if expected_type is not None and not isinstance(init_value, expected_type):
        raise TypeError(f"Argument was of type {type(init_value)}, not {expected_type}")
    return init_value
