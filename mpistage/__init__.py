"""mpistage: couple running MPI simulations to a sharded tensor store and PyTorch inference
on dedicated MPI server ranks. The public API is what this module exports."""

from ._mpi.process import app_comm, close_connection
from .backends.base import RunHandle
from .client import Client
from .dataset import Dataset
from .errors import (
                     BadArgumentError,
                     KeyNotFoundError,
                     MpistageError,
                     ProtocolError,
                     ServerRuntimeError,
                     ServerUnreachableError,
                     StoreFullError,
                     UnknownOperationError,
)
from .launcher import Experiment, Status

__version__ = "0.1.0"

__all__ = [
    "BadArgumentError", "Client", "Dataset", "KeyNotFoundError", "MpistageError", "ProtocolError",
    "RunHandle", "ServerRuntimeError", "ServerUnreachableError", "StoreFullError",
    "UnknownOperationError", "app_comm", "close_connection", "Experiment", "Status",
]
