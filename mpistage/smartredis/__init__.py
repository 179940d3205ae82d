"""SmartRedis's Python API over mpistage: ``import mpistage.smartredis as smartredis``.

A SmartRedis program runs after changing ``smartredis`` to ``mpistage.smartredis`` in its
imports and pointing ``SSDB`` at the servers' connection file (docs/smartredis.md, which also
shows how to leave ``import smartredis`` itself unchanged).
"""

from . import configoptions, dataset_utils, error, logcontext, logger, srobject, util
from .client import Client
from .configoptions import ConfigOptions
from .dataset import Dataset
from .dataset_utils import DatasetConverter
from .logcontext import LogContext
from .logger import LLDebug, LLDeveloper, LLInfo, LLQuiet, SRLoggingLevel, log_data, log_error, log_warning
from .srobject import SRObject

__all__ = [
    "Client", "ConfigOptions", "Dataset", "SRObject", "LogContext", "DatasetConverter",
    "log_data", "log_warning", "log_error", "LLQuiet", "LLInfo", "LLDebug", "LLDeveloper",
    "SRLoggingLevel", "configoptions", "dataset_utils", "error", "logcontext", "logger", "srobject", "util",
]
