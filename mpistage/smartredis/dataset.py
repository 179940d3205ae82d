"""SmartRedis's ``Dataset``: :class:`mpistage.Dataset` with the logging methods."""

from __future__ import annotations

from ..dataset import Dataset as _Dataset
from .srobject import SRObject


class Dataset(_Dataset, SRObject):
    """A named group of tensors and metadata (see :class:`mpistage.Dataset`) that also logs
    under its name (``log_data``, ``log_warning``, ``log_error``)."""

    def __init__(self, name: str) -> None:
        _Dataset.__init__(self, name)
        SRObject.__init__(self, name)

    @classmethod
    def adopt(cls, dataset: _Dataset) -> Dataset:
        """This class over the contents of a :class:`mpistage.Dataset` (nothing is copied)."""
        scalars, strings = dataset.metadata_arrays()
        return cls.from_parts(dataset.get_name(), {n: dataset.get_tensor(n) for n in dataset.get_tensor_names()},
                              scalars, strings)
