"""Run directories: ``exp_path/<model>/`` and ``exp_path/<ensemble>/<member>/``, with the attached
files copied, symlinked, or copied with ``;param;`` tags replaced (SmartSim's generator)."""

from __future__ import annotations

import re
import shutil
import warnings
from pathlib import Path
from typing import Any

from .entities import Ensemble, Model

TAG = re.compile(r";([A-Za-z_][A-Za-z0-9_.-]*);")


def configure_text(text: str, params: dict[str, Any]) -> str:
    """Replace every ``;name;`` whose name is a parameter; other tags are kept and warned about."""
    unknown: set[str] = set()

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in params:
            return str(params[name])
        unknown.add(name)
        return match.group(0)

    result = TAG.sub(sub, text)
    if unknown:
        warnings.warn(f"tags without a parameter left as they are: {sorted(unknown)}", stacklevel=3)
    return result


def _place(src: Path, dst_dir: Path, how: str, params: dict[str, Any]) -> None:
    dst = dst_dir / src.name
    if how == "symlink":
        dst.symlink_to(src, target_is_directory=src.is_dir())
    elif how == "copy":
        if src.is_dir():
            shutil.copytree(src, dst, symlinks=True, dirs_exist_ok=True)
        else:
            shutil.copy2(src, dst)
    else:
        files = [(p, dst / p.relative_to(src)) for p in src.rglob("*") if p.is_file()] if src.is_dir() else [(src, dst)]
        for f, target in files:
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                text = f.read_text()
            except UnicodeDecodeError as exc:
                raise ValueError(f"to_configure file {f} is not text") from exc
            target.write_text(configure_text(text, params))
            shutil.copymode(f, target)


def entity_dir(exp_path: Path, entity: Model | Ensemble) -> Path:
    return entity.path if entity.path is not None else exp_path / entity.name


def member_dirs(exp_path: Path, entity: Model | Ensemble) -> list[tuple[Model, Path]]:
    """Each model of ``entity`` with its run directory."""
    base = entity_dir(exp_path, entity)
    if isinstance(entity, Model):
        return [(entity, base)]
    return [(m, m.path if m.path is not None else base / m.name) for m in entity.models]


def generate(exp_path: Path, entity: Model | Ensemble, overwrite: bool = False) -> list[Path]:
    """Make the run directories of ``entity``; an existing one is an error unless ``overwrite``."""
    made = []
    for model, run_dir in member_dirs(exp_path, entity):
        if run_dir.exists():
            if not overwrite:
                raise FileExistsError(f"{run_dir} exists: pass overwrite=True to replace it")
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        for how, paths in (("copy", model.files.to_copy), ("symlink", model.files.to_symlink),
                           ("configure", model.files.to_configure)):
            for src in paths:
                _place(src, run_dir, how, model.params)
        model.path = run_dir
        made.append(run_dir)
    return made
