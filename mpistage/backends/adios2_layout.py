"""How mpistage keys, datasets and memory orders appear in ADIOS2 (no ``adios2`` import here).

- A tensor key is the variable's name, unchanged (``"sim.u"``), a global array of the shape put,
  in C order. A Fortran-ordered array is written as the same logical array (``a[i, j]`` is the
  variable's ``[i, j]``) and its key gets the attribute ``<key>/mpistage.order = "F"``, so
  mpistage's reader returns it Fortran-ordered again; stock readers see the shape that was put.
- Every tensor variable gets ``<key>/dimensions``: space-separated dimension names, which
  xarray's ADIOS2 reader (xarray-adios2) takes as the variable's ``dims``; by default
  ``<key>_dim0 <key>_dim1 ...`` (``/`` -> ``_``), or the names given in the options.
- A dataset ``d`` with tensors ``t``: variables ``d/t``; metadata field ``f``: attribute ``d/f``
  (a numeric array for scalars; a string for one string, a string array for several: string
  arrays arrive empty over SST, so SST takes one string per field); ``d/mpistage.tensors`` is
  the tensor names in order, as a JSON list in one string. A stock file's ``d/<name>``
  variables and attributes read as a dataset too (without the list: the variables in name order).
"""

from __future__ import annotations

import json

import numpy as np

from ..errors import BadArgumentError

SEP = "/"
ORDER_ATTR = "mpistage.order"
TENSORS_ATTR = "mpistage.tensors"
DIMENSIONS_ATTR = "dimensions"

#: ADIOS2 type names (``Variable.Type()``) -> numpy dtypes, for what stock writers may write.
ADIOS_TYPES: dict[str, np.dtype] = {
    "int8_t": np.dtype(np.int8), "char": np.dtype(np.int8), "uint8_t": np.dtype(np.uint8),
    "int16_t": np.dtype(np.int16), "uint16_t": np.dtype(np.uint16),
    "int32_t": np.dtype(np.int32), "uint32_t": np.dtype(np.uint32),
    "int64_t": np.dtype(np.int64), "uint64_t": np.dtype(np.uint64),
    "float": np.dtype(np.float32), "double": np.dtype(np.float64),
    "float complex": np.dtype(np.complex64), "double complex": np.dtype(np.complex128),
}


def dataset_variable(key: str, tensor: str) -> str:
    """The variable of tensor ``tensor`` of dataset ``key``."""
    return f"{key}{SEP}{tensor}"


def attribute_of(name: str, attribute: str) -> str:
    """The full name of attribute ``attribute`` of variable or dataset ``name``."""
    return f"{name}{SEP}{attribute}"


def dimension_names(key: str, ndim: int, given: dict[str, tuple[str, ...]]) -> str:
    """The ``dimensions`` attribute of ``key``: the names given for it, else ``<key>_dim<i>``
    (``/`` and spaces in the key become ``_``: no two variables share a dimension by accident)."""
    names = given.get(key)
    if names is None:
        stem = key.replace(SEP, "_").replace(" ", "_")
        names = tuple(f"{stem}_dim{i}" for i in range(ndim))
    if len(names) != ndim or any(not n or " " in n for n in names):
        raise BadArgumentError(f"dimension names {names!r} for {key!r}: need {ndim} names without spaces")
    return " ".join(names)


def is_fortran(array: np.ndarray) -> bool:
    """True for an array whose memory order is Fortran's (and not also C's)."""
    return array.ndim > 1 and array.flags.f_contiguous and not array.flags.c_contiguous


def c_layout(array: np.ndarray) -> np.ndarray:
    """``array`` as ADIOS2 takes it: C-contiguous, native byte order (a copy only when needed)."""
    return np.asarray(array, dtype=array.dtype.newbyteorder("="), order="C")


def numpy_dtype(adios_type: str, name: str) -> np.dtype:
    """The numpy dtype of ADIOS2 type ``adios_type``; BadArgumentError for strings and others."""
    try:
        return ADIOS_TYPES[adios_type]
    except KeyError:
        raise BadArgumentError(f"ADIOS2 variable {name!r} is of type {adios_type!r}, not a numeric array") from None


def dataset_members(key: str, names: list[str]) -> list[str]:
    """Of ``names`` (variables or attributes), the direct members of dataset ``key`` (the part
    after ``key/``, without further ``/``), in order."""
    lead = key + SEP
    return [n[len(lead):] for n in names if n.startswith(lead) and SEP not in n[len(lead):]]


def metadata_fields(key: str, attributes: list[str]) -> list[str]:
    """The metadata fields of dataset ``key`` among ``attributes``: its direct attributes but
    mpistage's own (``mpistage.*``)."""
    return [f for f in dataset_members(key, attributes) if not f.startswith("mpistage.")]


def encode_names(names: list[str]) -> str:
    """The ``mpistage.tensors`` attribute: one string (string arrays do not survive SST)."""
    return json.dumps(list(names))


def decode_names(value: list[str]) -> list[str]:
    """The tensor names an ``mpistage.tensors`` attribute (read as a list of strings) holds."""
    try:
        names = json.loads(value[0]) if len(value) == 1 else None
    except ValueError:
        names = None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise BadArgumentError(f"attribute mpistage.tensors is {value!r}, not a JSON list of names")
    return names
