"""Parameter permutation strategies of an ensemble: SmartSim's ``all_perm``, ``step``, ``random``
or a callable ``fn(names, values, **kwargs) -> list[dict]``."""

from __future__ import annotations

import itertools
import random as _random
from collections.abc import Callable, Mapping
from typing import Any

Strategy = Callable[..., list[dict[str, Any]]]


def _lists(params: Mapping[str, Any]) -> tuple[list[str], list[list[Any]]]:
    names = list(params)
    values = [list(v) if isinstance(v, (list, tuple, range)) else [v] for v in params.values()]
    return names, values


def all_perm(names: list[str], values: list[list[Any]], **_: Any) -> list[dict[str, Any]]:
    """Every combination (the Cartesian product), in the order of ``itertools.product``."""
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values)]


def step(names: list[str], values: list[list[Any]], **_: Any) -> list[dict[str, Any]]:
    """The i-th value of every parameter together; every list must have the same length."""
    lengths = {len(v) for v in values}
    if len(lengths) > 1:
        raise ValueError(f"perm_strategy='step' needs parameter lists of one length, not {sorted(lengths)}")
    return [dict(zip(names, combo, strict=True)) for combo in zip(*values, strict=True)]


def random(names: list[str], values: list[list[Any]], n_models: int | None = None,
           seed: int | None = None, **_: Any) -> list[dict[str, Any]]:
    """``n_models`` combinations drawn without repetition from all of them (all of them, shuffled,
    when ``n_models`` is not given or larger)."""
    combos = all_perm(names, values)
    count = len(combos) if n_models is None else min(int(n_models), len(combos))
    return _random.Random(seed).sample(combos, count)


STRATEGIES: dict[str, Strategy] = {"all_perm": all_perm, "step": step, "random": random}


def permutations(params: Mapping[str, Any], strategy: str | Strategy = "all_perm",
                 **kwargs: Any) -> list[dict[str, Any]]:
    """The parameter sets of an ensemble's members."""
    if not params:
        return []
    fn = STRATEGIES.get(strategy) if isinstance(strategy, str) else strategy
    if fn is None or not callable(fn):
        raise ValueError(f"unknown perm_strategy {strategy!r}: use one of {sorted(STRATEGIES)} or a callable")
    names, values = _lists(params)
    result = fn(names, values, **kwargs)
    if not isinstance(result, list) or not all(isinstance(p, dict) for p in result):
        raise ValueError("a perm_strategy callable must return a list of dicts")
    return result
