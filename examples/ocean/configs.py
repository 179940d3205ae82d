"""Namelist groups of the model's configurations (values from shared/OCEAN-NOTES.md).

A configuration is a mapping ``group -> {variable: value}``, written with
:func:`ocean.state.write_namelist`. :data:`FINE` is the eddy-resolving 12.5 km run; :func:`coarse`
gives the factor-4 and factor-8 grids with their viscosity, time step and the MEKE-like
closure's constants tuned per resolution.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

Namelist = dict[str, dict[str, Any]]

FINE_CELLS = 128
FINE_NU4 = 1.0e10  # m^4/s at dx = 12.5 km; scaled with dx^4 on coarser grids

FINE: Namelist = {
    "grid": {"nx": FINE_CELLS, "ny": FINE_CELLS, "lx": 1.6e6, "ly": 1.6e6},
    "physics": {"f0": 1.0e-4, "beta": 2.0e-11, "h0": 800.0, "gprime": 0.02, "rho0": 1000.0,
                "tau0": 0.1, "nu4": FINE_NU4, "drag": 1.0e-7},
    "run": {"dt": 1080.0},
    "closure": {"scheme": "none"},
}

#: per coarsening factor: time step (s) and the MEKE-like constants found by tuning
COARSE: dict[int, dict[str, float]] = {
    4: {"dt": 4320.0, "meke_alpha": 0.02, "meke_tau_days": 30.0, "meke_kappa_e": 5000.0},
    8: {"dt": 8640.0, "meke_alpha": 0.05, "meke_tau_days": 30.0, "meke_kappa_e": 1.0e4},
}


def coarse(factor: int, scheme: str = "meke") -> Namelist:
    """The basin on a grid ``factor`` times coarser than :data:`FINE`, closure ``scheme`` (none | meke | ml).

    Raises ValueError for a factor without tuned constants.
    """
    if factor not in COARSE:
        raise ValueError(f"no coarse configuration for factor {factor}; known: {sorted(COARSE)}")
    c = COARSE[factor]
    nml = merged(FINE, grid={"nx": FINE_CELLS // factor, "ny": FINE_CELLS // factor},
                 physics={"nu4": FINE_NU4 * factor**4}, run={"dt": c["dt"]})
    nml["closure"] = {"scheme": scheme, **{k: v for k, v in c.items() if k.startswith("meke_")}}
    return nml


def merged(base: Mapping[str, Mapping[str, Any]], **groups: Mapping[str, Any]) -> Namelist:
    """A copy of ``base`` with the variables of ``groups`` (group name -> variables) set."""
    out: Namelist = copy.deepcopy({k: dict(v) for k, v in base.items()})
    for name, values in groups.items():
        out.setdefault(name, {}).update(values)
    return out
