"""``Dataset``: named tensors plus metadata, put and fetched as one object (SmartRedis's names)."""

from __future__ import annotations

import numpy as np

from .errors import BadArgumentError, KeyNotFoundError, typecheck
from .protocol import DTYPE_CODES, META_DTYPE_CODES


class Dataset:
    """A named group of tensors and metadata fields, stored under one key.

    Metadata scalars accumulate per field (``add_meta_scalar`` twice gives two values), as do
    metadata strings, as in SmartRedis. Arguments of the wrong type raise TypeError, as in
    SmartRedis; a name that is not there raises KeyNotFoundError.
    """

    def __init__(self, name: str) -> None:
        typecheck(name, "name", str)
        if not name:
            raise BadArgumentError("a dataset needs a non-empty name")
        self.name = name
        self._tensors: dict[str, np.ndarray] = {}
        self._scalars: dict[str, list] = {}
        self._scalar_types: dict[str, np.dtype] = {}
        self._strings: dict[str, list[str]] = {}

    def get_name(self) -> str:
        """The dataset's name (its key, before any ensemble prefix)."""
        return self.name

    # ------------------------------------------------------------ tensors
    def add_tensor(self, name: str, data: np.ndarray) -> None:
        """Add (or replace) a copy of ``data`` (as SmartRedis and the Fortran client do: changing
        the array afterwards does not change the dataset). Raises TypeError for a name that is
        not a str, data that is not a numpy array, or an unsupported dtype."""
        typecheck(name, "name", str)
        typecheck(data, "data", np.ndarray)
        arr = np.array(data, order="K", copy=True)
        if arr.dtype.newbyteorder("=") not in DTYPE_CODES:
            raise TypeError(f"dtype {arr.dtype} is not supported")
        self._tensors[name] = arr

    def get_tensor(self, name: str) -> np.ndarray:
        """The tensor called ``name``; raises KeyNotFoundError when there is none."""
        typecheck(name, "name", str)
        try:
            return self._tensors[name]
        except KeyError:
            raise KeyNotFoundError(f"dataset {self.name!r} has no tensor {name!r}") from None

    def get_tensor_type(self, name: str) -> type:
        """The numpy scalar type of tensor ``name`` (``numpy.float64``...)."""
        return self.get_tensor(name).dtype.type

    def get_tensor_dims(self, name: str) -> list[int]:
        """The shape of tensor ``name``, as a list."""
        return list(self.get_tensor(name).shape)

    def get_tensor_names(self) -> list[str]:
        """The names of its tensors, in the order they were added."""
        return list(self._tensors)

    # ------------------------------------------------------------ metadata
    def add_meta_scalar(self, name: str, data: int | float | np.generic) -> None:
        """Append a scalar to metadata field ``name`` (all of one field share a dtype): float32/64,
        int8..int64, uint8..uint64 (SmartRedis's double, float, int32, int64, uint32, uint64 and
        more); TypeError for more than one value or another type."""
        typecheck(name, "name", str)
        value = np.asarray(data)
        if value.size != 1:
            raise TypeError("add_meta_scalar takes one scalar value")
        value = value.reshape(())
        if value.dtype.newbyteorder("=") not in META_DTYPE_CODES:
            raise TypeError(f"metadata dtype {value.dtype} is not supported")
        if name in self._strings:
            raise BadArgumentError(f"metadata field {name!r} already holds strings")
        dtype = self._scalar_types.setdefault(name, value.dtype)
        if value.dtype != dtype:
            raise TypeError(f"metadata field {name!r} holds {dtype}, not {value.dtype}")
        self._scalars.setdefault(name, []).append(value.item())

    def add_meta_string(self, name: str, data: str) -> None:
        """Append a string to metadata field ``name``."""
        typecheck(name, "name", str)
        typecheck(data, "data", str)
        if name in self._scalars:
            raise BadArgumentError(f"metadata field {name!r} already holds scalars")
        self._strings.setdefault(name, []).append(data)

    def get_meta_scalars(self, name: str) -> np.ndarray:
        """The values of metadata field ``name``; raises KeyNotFoundError when there is none."""
        typecheck(name, "name", str)
        if name not in self._scalars:
            raise KeyNotFoundError(f"dataset {self.name!r} has no metadata scalars {name!r}")
        return np.array(self._scalars[name], dtype=self._scalar_types[name])

    def get_meta_strings(self, name: str) -> list[str]:
        """The strings of metadata field ``name``; raises KeyNotFoundError when there is none."""
        typecheck(name, "name", str)
        if name not in self._strings:
            raise KeyNotFoundError(f"dataset {self.name!r} has no metadata strings {name!r}")
        return list(self._strings[name])

    def get_metadata_field_names(self) -> list[str]:
        """The names of its metadata fields, scalars first."""
        return list(self._scalars) + list(self._strings)

    def get_metadata_field_type(self, name: str) -> type:
        """The type of metadata field ``name``: a numpy scalar type, or ``str`` for strings."""
        typecheck(name, "name", str)
        if name in self._strings:
            return str
        if name not in self._scalar_types:
            raise KeyNotFoundError(f"dataset {self.name!r} has no metadata field {name!r}")
        return self._scalar_types[name].type

    # ------------------------------------------------------------ wire
    def metadata_arrays(self) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
        """The metadata as the protocol encodes it."""
        return {k: self.get_meta_scalars(k) for k in self._scalars}, dict(self._strings)

    @classmethod
    def from_parts(cls, name: str, tensors: dict[str, np.ndarray],
                   scalars: dict[str, np.ndarray], strings: dict[str, list[str]]) -> Dataset:
        """A dataset from decoded parts (the tensors are taken as they are, not copied)."""
        ds = cls(name)
        ds._tensors = dict(tensors)
        for k, values in scalars.items():
            ds._scalars[k] = values.tolist()
            ds._scalar_types[k] = values.dtype
        ds._strings = {k: list(v) for k, v in strings.items()}
        return ds

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, tensors={self.get_tensor_names()}, "
                f"metadata={self.get_metadata_field_names()})")

    def __str__(self) -> str:
        lines = [f"DataSet ({self.name}):"]
        lines += [f"  Tensor {n}: {a.dtype} {list(a.shape)}" for n, a in self._tensors.items()]
        lines += [f"  Metadata {n}: {self._scalar_types[n]} x{len(v)}" for n, v in self._scalars.items()]
        lines += [f"  Metadata {n}: str x{len(v)}" for n, v in self._strings.items()]
        return "\n".join(lines)
