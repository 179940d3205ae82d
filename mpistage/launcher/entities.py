"""Models and ensembles: what an experiment generates run directories for and starts."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .permutations import Strategy, permutations
from .settings import RunSettings

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def check_name(name: str) -> str:
    """An entity name becomes a directory and a key prefix: letters, digits, ``_ . -`` only."""
    if not isinstance(name, str) or not _NAME.match(name) or name in (".", ".."):
        raise ValueError(f"entity name {name!r}: use letters, digits, '_', '.' and '-' only")
    return name


def _paths(items: str | Iterable[str] | None) -> list[Path]:
    if items is None:
        return []
    if isinstance(items, (str, os.PathLike)):
        items = [items]
    paths = [Path(p).resolve() for p in items]
    for p in paths:
        if not p.exists():
            raise FileNotFoundError(f"generator file {p} does not exist")
    return paths


@dataclass
class EntityFiles:
    """Files for a run directory: copied, symlinked, or copied with ``;param;`` tags replaced."""

    to_copy: list[Path] = field(default_factory=list)
    to_symlink: list[Path] = field(default_factory=list)
    to_configure: list[Path] = field(default_factory=list)

    def extend(self, other: EntityFiles) -> None:
        self.to_copy += other.to_copy
        self.to_symlink += other.to_symlink
        self.to_configure += other.to_configure


def _arg(name: str, value: Any) -> list[str]:
    return [f"-{name}", str(value)] if len(name) == 1 else [f"--{name}={value}"]


class Model:
    """One application run: SmartSim's ``Model`` (a name, run settings, parameters, files)."""

    def __init__(self, name: str, params: Mapping[str, Any] | None, run_settings: RunSettings,
                 path: str | os.PathLike[str] | None = None, params_as_args: Iterable[str] | None = None,
                 enable_key_prefixing: bool = False) -> None:
        if not isinstance(run_settings, RunSettings):
            raise TypeError(f"model {name!r}: run_settings must be a RunSettings, not {type(run_settings).__name__}")
        self.name = check_name(name)
        self.params: dict[str, Any] = dict(params or {})
        self.run_settings = run_settings
        self.path = Path(path).resolve() if path is not None else None
        self.files = EntityFiles()
        self.incoming_entities: list[Model | Ensemble] = []
        self._key_prefixing = bool(enable_key_prefixing)
        for name_ in params_as_args or ():
            if name_ not in self.params:
                raise ValueError(f"model {name!r}: params_as_args names {name_!r}, which is not a parameter")
            self.run_settings.add_exe_args(_arg(name_, self.params[name_]))

    # ------------------------------------------------------------------ SmartSim's API
    def attach_generator_files(self, to_copy: str | Iterable[str] | None = None,
                               to_symlink: str | Iterable[str] | None = None,
                               to_configure: str | Iterable[str] | None = None) -> None:
        """Files and directories that ``Experiment.generate`` puts in the run directory;
        ``to_configure`` files are copied with every ``;name;`` tag replaced by the parameter."""
        self.files.extend(EntityFiles(_paths(to_copy), _paths(to_symlink), _paths(to_configure)))

    def enable_key_prefixing(self) -> None:
        """Keys this model writes get the prefix ``<model name>.`` (``SSKEYOUT``)."""
        self._key_prefixing = True

    def disable_key_prefixing(self) -> None:
        self._key_prefixing = False

    def query_key_prefixing(self) -> bool:
        return self._key_prefixing

    def register_incoming_entity(self, incoming_entity: Model | Ensemble) -> None:
        """This model reads keys written by ``incoming_entity`` (``SSKEYIN``; pick one with
        ``Client.set_data_source(name)``); an ensemble registers each of its members."""
        if not isinstance(incoming_entity, (Model, Ensemble)):
            raise TypeError("register_incoming_entity takes a Model or an Ensemble")
        self.incoming_entities.append(incoming_entity)

    # ------------------------------------------------------------------ for the launcher
    def key_env(self) -> dict[str, str]:
        """``SSKEYOUT`` and ``SSKEYIN`` as SmartSim sets them."""
        env: dict[str, str] = {}
        if self._key_prefixing:
            env["SSKEYOUT"] = self.name
        sources = [m.name for e in self.incoming_entities for m in (e.models if isinstance(e, Ensemble) else [e])]
        if sources:
            env["SSKEYIN"] = ",".join(sources)
        return env

    @property
    def models(self) -> list[Model]:
        return [self]

    @property
    def type(self) -> str:
        return "Model"

    def __repr__(self) -> str:
        return f"Model({self.name!r}, {self.run_settings!r}, params={self.params})"


class Ensemble:
    """SmartSim's ``Ensemble``: members ``<name>_<i>``, one per parameter set (``perm_strategy``),
    each ``replicas`` times, or ``replicas`` copies of one run when there are no parameters."""

    def __init__(self, name: str, params: Mapping[str, Any] | None = None,
                 run_settings: RunSettings | None = None, replicas: int | None = None,
                 perm_strategy: str | Strategy = "all_perm", path: str | os.PathLike[str] | None = None,
                 params_as_args: Iterable[str] | None = None, **kwargs: Any) -> None:
        self.name = check_name(name)
        self.params = dict(params or {})
        self.run_settings = run_settings
        self.path = Path(path).resolve() if path is not None else None
        self.models: list[Model] = []
        if replicas is not None and int(replicas) < 1:
            raise ValueError(f"ensemble {name!r}: replicas must be at least 1, not {replicas}")
        if run_settings is None:
            if self.params or replicas:
                raise ValueError(f"ensemble {name!r}: params or replicas need run_settings")
            return
        sets = permutations(self.params, perm_strategy, **kwargs) or [{}]
        for params_ in sets:
            for _ in range(int(replicas or 1)):
                self.add_model(Model(f"{self.name}_{len(self.models)}", params_, run_settings.copy(),
                                     params_as_args=params_as_args))

    def add_model(self, model: Model) -> None:
        """Add a model made with ``Experiment.create_model`` as a member."""
        if not isinstance(model, Model):
            raise TypeError("add_model takes a Model")
        if any(m.name == model.name for m in self.models):
            raise ValueError(f"ensemble {self.name!r} already has a member named {model.name!r}")
        self.models.append(model)

    @property
    def entities(self) -> list[Model]:
        return self.models

    def __iter__(self) -> Iterator[Model]:
        return iter(self.models)

    def __len__(self) -> int:
        return len(self.models)

    def enable_key_prefixing(self) -> None:
        """Every member's keys get the prefix ``<member name>.``."""
        for m in self.models:
            m.enable_key_prefixing()

    def query_key_prefixing(self) -> bool:
        return bool(self.models) and all(m.query_key_prefixing() for m in self.models)

    def register_incoming_entity(self, incoming_entity: Model | Ensemble) -> None:
        for m in self.models:
            m.register_incoming_entity(incoming_entity)

    def attach_generator_files(self, to_copy: str | Iterable[str] | None = None,
                               to_symlink: str | Iterable[str] | None = None,
                               to_configure: str | Iterable[str] | None = None) -> None:
        for m in self.models:
            m.attach_generator_files(to_copy, to_symlink, to_configure)

    @property
    def type(self) -> str:
        return "Ensemble"

    def __repr__(self) -> str:
        return f"Ensemble({self.name!r}, {len(self.models)} members)"
