"""SmartRedis's ``DatasetConverter``: describe a Dataset's tensors as xarray variables in its
metadata, and build ``xarray.DataArray`` objects from such a Dataset (xarray is optional: only
:meth:`DatasetConverter.transform_to_xarray` needs it).

The metadata layout is SmartRedis's: string field ``_xarray_data_names`` lists the variables;
per variable ``v``, ``_xarray_{v}_dim_names``, ``_xarray_{v}_coord_names`` and
``_xarray_{v}_attr_names`` hold comma-separated names of metadata fields (or ``null``); each
dimension and attribute field holds its value as a string, each coordinate is a variable itself.
"""

from __future__ import annotations

from typing import Any

from ..dataset import Dataset
from ..errors import ServerRuntimeError, typecheck

_PARTS = ("dim_names", "coord_names", "attr_names")


def _names(value: list[str] | str | None, what: str) -> list[str] | None:
    if value is None:
        return None
    names = [value] if isinstance(value, str) else value
    typecheck(names, what, list)
    for name in names:
        typecheck(name, f"an element of {what}", str)
        if not name:
            raise ServerRuntimeError(f"an empty name in {what}")
    return names


def _listed(dataset: Dataset, variable: str, part: str) -> list[str]:
    value = dataset.get_meta_strings(f"_xarray_{variable}_{part}")[0]
    return [] if value == "null" else value.split(",")


class DatasetConverter:
    """Between Datasets and xarray, with SmartRedis's metadata layout."""

    @staticmethod
    def add_metadata_for_xarray(dataset: Dataset, data_names: list[str] | str, dim_names: list[str] | str,
                                coord_names: list[str] | str | None = None,
                                attr_names: list[str] | str | None = None) -> None:
        """Record that tensors ``data_names`` are xarray variables with the dimension,
        coordinate and attribute fields named."""
        typecheck(dataset, "dataset", Dataset)
        data = _names(data_names, "data_names") or []
        parts = (_names(dim_names, "dim_names"), _names(coord_names, "coord_names"),
                 _names(attr_names, "attr_names"))
        for name in data:
            dataset.add_meta_string("_xarray_data_names", name)
            for part, names in zip(_PARTS, parts, strict=True):
                dataset.add_meta_string(f"_xarray_{name}_{part}", ",".join(names) if names else "null")

    @staticmethod
    def transform_to_xarray(dataset: Dataset) -> dict[str, Any]:
        """``{variable: xarray.DataArray}`` of a Dataset described by
        :meth:`add_metadata_for_xarray`; variables that are another's coordinate become its
        coordinates. RedisRuntimeError when xarray is not installed."""
        typecheck(dataset, "dataset", Dataset)
        try:
            import xarray as xr
        except ImportError as exc:
            raise ServerRuntimeError("the optional package xarray must be installed for "
                                     "transform_to_xarray (pip install xarray)") from exc
        names = dataset.get_meta_strings("_xarray_data_names")
        coords_of = {n: [c for c in _listed(dataset, n, "coord_names") if c in names] for n in names}
        coordinate_vars = {c for cs in coords_of.values() for c in cs}

        def dims(n: str) -> list[str]:
            return [dataset.get_meta_strings(f)[0] for f in _listed(dataset, n, "dim_names")]

        def attrs(n: str) -> dict[str, str]:
            return {f: dataset.get_meta_strings(f)[0] for f in _listed(dataset, n, "attr_names")}

        return {n: xr.DataArray(name=n, data=dataset.get_tensor(n), dims=dims(n), attrs=attrs(n),
                                coords={c: (dims(c), dataset.get_tensor(c), attrs(c)) for c in coords_of[n]})
                for n in names if n not in coordinate_vars}
