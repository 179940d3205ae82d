"""The ensemble launcher: SmartSim 0.8's ``Experiment`` API on mpistage (docs/launcher.md)."""

from .database import Orchestrator
from .entities import Ensemble, Model
from .experiment import Experiment
from .jobs import MemberFailedError, MemberFuture
from .settings import RunSettings
from .status import Status

__all__ = ["Ensemble", "Experiment", "MemberFailedError", "MemberFuture", "Model", "Orchestrator", "RunSettings",
           "Status"]
