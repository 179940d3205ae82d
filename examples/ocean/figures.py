"""The report's PNG figures, after Partee et al. Figs. 6-8 (matplotlib, no display needed).

* ``fig6_eke_maps.png``: time-mean EKE, truth / ML / MEKE, one row per factor (log colour scale);
* ``fig7_zonal_means.png``: zonal means of those maps against latitude (y), log scale;
* ``fig8_h_ensemble.png``: ensemble mean and spread (standard deviation over members) of h at the
  members' last snapshot, per closure, factor 4 (the paper's Fig. 8 shows SSH);
* ``training.png``: held-out RMSE of ln EKE per training round.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

LY_KM = 1600.0


def _group(members: list, closure: str, factor: int, what: str) -> list[np.ndarray]:
    return [getattr(m, what) for m in members if m.closure == closure and m.factor == factor
            and getattr(m, what) is not None]


def _maps(out: Path, members: list) -> dict[int, dict[str, np.ndarray]]:
    """Per factor: the truth and the ensemble-mean time-mean EKE of each closure (interior cells)."""
    maps: dict[int, dict[str, np.ndarray]] = {}
    for factor in sorted({m.factor for m in members}):
        path = out / "trainer" / f"truth_f{factor}.npy"
        ml, meke = _group(members, "ml", factor, "eke"), _group(members, "meke", factor, "eke")
        if not path.exists() or not (ml or meke):
            continue
        shape = (ml or meke)[0].shape
        truth = np.load(path)
        maps[factor] = {"truth": truth[1:-1, 1:-1] if truth.shape == shape else truth}
        for name, group in (("ML", ml), ("MEKE", meke)):
            if group:
                maps[factor][name] = np.mean(group, axis=0)[1:-1, 1:-1]
    return maps


def eke_maps(path: Path, maps: dict[int, dict[str, np.ndarray]]) -> None:
    fig, axes = plt.subplots(len(maps), 3, figsize=(11, 3.4 * len(maps)), squeeze=False)
    for row, (factor, m) in zip(axes, maps.items(), strict=True):
        vals = np.concatenate([a.ravel() for a in m.values()])
        norm = LogNorm(vmin=max(np.percentile(vals, 2), 1e-7), vmax=max(vals.max(), 1e-6))
        for ax, name in zip(row, ("truth", "ML", "MEKE"), strict=True):
            ax.set_xticks([]), ax.set_yticks([])
            if name not in m:
                ax.set_title(f"{name}: none")
                continue
            im = ax.imshow(np.maximum(m[name].T, norm.vmin), origin="lower", norm=norm, cmap="magma")
            ax.set_title(f"factor {factor}: {name}")
        fig.colorbar(im, ax=row.tolist(), label="time-mean EKE (m²/s²)", shrink=0.9)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def zonal_means(path: Path, maps: dict[int, dict[str, np.ndarray]]) -> None:
    fig, axes = plt.subplots(1, len(maps), figsize=(5.5 * len(maps), 4), squeeze=False)
    for ax, (factor, m) in zip(axes[0], maps.items(), strict=True):
        for name, style in (("truth", "k-"), ("ML", "C0-"), ("MEKE", "C3--")):
            if name in m:
                ny = m[name].shape[1] + 2
                y = (np.arange(1, ny - 1) + 0.5) * LY_KM / ny
                ax.semilogy(y, m[name].mean(axis=0), style, label=name)
        ax.set_xlabel("y (km)")
        ax.set_ylabel("zonal-mean EKE (m²/s²)")
        ax.set_title(f"factor {factor}")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def h_ensemble(path: Path, members: list, factor: int = 4) -> bool:
    rows = [(c, np.array(_group(members, c, factor, "h_last"))) for c in ("ml", "meke")]
    rows = [(c, h) for c, h in rows if len(h)]
    if not rows:
        return False
    fig, axes = plt.subplots(len(rows), 2, figsize=(9, 3.6 * len(rows)), squeeze=False)
    for (closure, h), (a, b) in zip(rows, axes, strict=True):
        im = a.imshow(h.mean(axis=0).T, origin="lower", cmap="viridis")
        a.set_title(f"{closure} f{factor}: ensemble-mean h (m), {len(h)} members", fontsize=10)
        fig.colorbar(im, ax=a)
        im = b.imshow(h.std(axis=0).T, origin="lower", cmap="plasma")
        b.set_title("spread of h (std over members, m)", fontsize=10)
        fig.colorbar(im, ax=b)
        for ax in (a, b):
            ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def training_curve(path: Path, rounds: list[dict[str, Any]]) -> bool:
    pts = [(r["round"], r["heldout_rmse_ln_eke"]) for r in rounds if r.get("heldout_rmse_ln_eke") is not None]
    if not pts:
        return False
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(*zip(*pts, strict=True), "o-", label="EKEResNet")
    quad = [(r["round"], r["heldout_rmse_quadratic_baseline"]) for r in rounds
            if r.get("heldout_rmse_quadratic_baseline") is not None]
    if quad:
        ax.plot(*zip(*quad, strict=True), "s--", color="grey", label="quadratic fit")
    ax.set_xlabel("training round")
    ax.set_ylabel("held-out RMSE of ln EKE")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def draw(out: Path, report: dict[str, Any], members: list) -> list[str]:
    """Write the figures into ``out``; returns their file names."""
    made = []
    maps = _maps(out, members)
    if maps:
        eke_maps(out / "fig6_eke_maps.png", maps)
        zonal_means(out / "fig7_zonal_means.png", maps)
        made += ["fig6_eke_maps.png", "fig7_zonal_means.png"]
    if h_ensemble(out / "fig8_h_ensemble.png", members):
        made.append("fig8_h_ensemble.png")
    if training_curve(out / "training.png", report.get("training", [])):
        made.append("training.png")
    return made
