"""The ocean example's report: EKE skill of the ML closure against the MEKE-like baseline, cost, stability.

    .venv/bin/python examples/ocean/report.py OUT_DIR        # run by run.py at the end; standalone too

Reads what ``run.py`` left in ``OUT_DIR`` (``ensemble.json``; the trainer's ``training.json`` and
``truth_f4.npy``/``truth_f8.npy``; each member's ``diag.txt`` and ``snap_d*.bin``) and writes
``report.md``, ``report.json`` and PNG figures there; prints the table.

Scoring, fixed before any result was seen: a member's EKE map is the time mean of its E field
(the network's EKE for ``closure = ml``, the prognostic energy for ``meke``) over its snapshots
after the first :data:`DISCARD_DAYS` days (the baseline's E starts at a constant and adjusts over
tau_d = 30 days); the truth is the time-mean coarse-grained EKE of the fine run; RMSE over the
interior cells (not next to a wall), of EKE (m^2/s^2) and of ln EKE. A group's figure is the mean
of its members' RMSEs; the RMSE of the ensemble-mean map is given too.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ocean import state  # noqa: E402

DISCARD_DAYS = 30
#: a map whose spatial std of ln EKE is below this fraction of the truth's is called near-uniform
UNIFORM_FRACTION = 0.25
#: the paper's figures (Partee et al., section 4): RMSE of EKE, ML vs MEKE, and the coupling overhead
PAPER = {"rmse_eke_ml": 0.012, "rmse_eke_meke": 0.015, "change_percent": -20.0, "mpistage_percent": 1.5}
GOAL_PERCENT = 1.0
_SNAP = re.compile(r"snap_d(\d{6})\.bin$")


@dataclass
class Member:
    """One coarse member's record and what its files say."""

    name: str
    closure: str
    factor: int
    start_day: int
    days: int
    dir: Path
    status: str
    eke: np.ndarray | None = None        # time-mean E (nx, ny)
    h_mean: np.ndarray | None = None     # time-mean h
    h_last: np.ndarray | None = None     # h at the last snapshot
    snapshots: int = 0
    diag: np.ndarray | None = None
    cost: dict[str, float] | None = None

    @property
    def stable(self) -> bool:
        """Completed, a diagnostics line for every day, every value finite."""
        return (self.status == "Completed" and self.diag is not None and self.diag.shape[0] == self.days
                and bool(np.isfinite(self.diag).all()) and self.eke is not None)


def interior(a: np.ndarray) -> np.ndarray:
    """Cells not next to a wall."""
    return a[1:-1, 1:-1]


def read_diag(path: Path) -> tuple[np.ndarray | None, dict[str, float]]:
    """Rows (day, ke, hmin, hmax, umax, mass, kappa_mean, e_mean) and the ``# name value`` pairs at the end."""
    if not path.exists():
        return None, {}
    rows, cost = [], {}
    for line in path.read_text().splitlines():
        if line.startswith("# ") and not line.startswith("# day"):
            words = line[2:].split()
            cost.update({k: float(v) for k, v in zip(words[::2], words[1::2], strict=False)})
        elif line.strip() and not line.startswith("#"):
            rows.append([float(x) for x in line.split()])
    return (np.array(rows) if rows else np.empty((0, 8))), cost


def load_member(out: Path, rec: dict[str, Any]) -> Member:
    """A member's time-mean fields (snapshots after DISCARD_DAYS) and diagnostics."""
    m = Member(rec["name"], rec["closure"], int(rec["factor"]), int(rec["start_day"]), int(rec["days"]),
               out / rec["dir"], rec.get("status", "?"))
    discard = min(DISCARD_DAYS, m.days // 4)
    files = sorted((int(g.group(1)), p) for p in m.dir.glob("snap_d*.bin") if (g := _SNAP.search(p.name)))
    files = [(d, p) for d, p in files if d - m.start_day > discard]
    if files:
        states = [state.read_state(p) for _, p in files]
        m.eke = np.mean([s.e for s in states], axis=0)
        m.h_mean = np.mean([s.h for s in states], axis=0)
        m.h_last = states[-1].h
        m.snapshots = len(states)
    m.diag, m.cost = read_diag(m.dir / "diag.txt")
    return m


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)))


def truth_interior(truth: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The truth's interior cells, whether it was saved for the whole coarse grid or its interior."""
    if truth.shape == shape:
        return interior(truth)
    if truth.shape == (shape[0] - 2, shape[1] - 2):
        return truth
    raise ValueError(f"truth map {truth.shape} does not fit the members' grid {shape}")


def score(group: list[Member], truth: np.ndarray) -> dict[str, Any]:
    """RMSE of EKE and ln EKE per member, their mean, and those of the ensemble-mean map."""
    done = [m for m in group if m.eke is not None]
    if not done:
        return {"members": len(group), "scored": 0}
    t = truth_interior(truth, done[0].eke.shape)
    lt = np.log(np.maximum(t, 1e-30))
    per = [{"name": m.name, "rmse_eke": rmse(interior(m.eke), t),
            "rmse_ln_eke": rmse(np.log(np.maximum(interior(m.eke), 1e-30)), lt)} for m in done]
    mean_map = np.mean([interior(m.eke) for m in done], axis=0)
    ln_map = np.log(np.maximum(mean_map, 1e-30))
    corr = float(np.corrcoef(ln_map.ravel(), lt.ravel())[0, 1]) if ln_map.std() > 0 else math.nan
    return {"members": len(group), "scored": len(done),
            "pattern_corr_ln_eke": corr, "spatial_std_ln_eke": float(ln_map.std()),
            "truth_spatial_std_ln_eke": float(lt.std()),
            "near_uniform": bool(ln_map.std() < UNIFORM_FRACTION * lt.std()),
            "rmse_eke": float(np.mean([p["rmse_eke"] for p in per])),
            "rmse_ln_eke": float(np.mean([p["rmse_ln_eke"] for p in per])),
            "rmse_eke_spread": float(np.std([p["rmse_eke"] for p in per])),
            "ensemble_mean_rmse_eke": rmse(mean_map, t),
            "ensemble_mean_rmse_ln_eke": rmse(np.log(np.maximum(mean_map, 1e-30)), lt),
            "domain_mean_eke": float(np.mean([interior(m.eke).mean() for m in done])),
            "truth_domain_mean_eke": float(t.mean()),
            "time_mean_ke": float(np.mean([m.diag[:, 1].mean() for m in done if m.diag is not None and m.diag.size])),
            "per_member": per}


def engine_totals(out: Path) -> dict[str, float]:
    """Server-side totals over the shards (``server_info.json``, saved by run.py before the database
    stopped): requests, rows, compute and queue seconds of the models and scripts."""
    path = out / "server_info.json"
    if not path.exists():
        return {}
    totals = {"model_requests": 0.0, "model_rows": 0.0, "model_compute_s": 0.0, "model_queue_s": 0.0,
              "script_compute_s": 0.0, "script_queue_s": 0.0}
    for shard in json.loads(path.read_text()):
        engine = shard.get("engine") or {}
        for m in (engine.get("models") or {}).values():
            totals["model_requests"] += m.get("requests", 0)
            totals["model_rows"] += m.get("rows", 0)
            totals["model_compute_s"] += m.get("compute_s", 0.0)
            totals["model_queue_s"] += m.get("queue_wait_s", 0.0)
        for sc in (engine.get("scripts") or {}).values():
            totals["script_compute_s"] += sc.get("compute_s", 0.0)
            totals["script_queue_s"] += sc.get("queue_wait_s", 0.0)
    return totals


def cost(members: list[Member], engine: dict[str, float]) -> dict[str, Any]:
    """Time in mpistage calls (the slowest rank's, from each ML member's diagnostics), how much of it
    the servers spent computing (network and preprocessing script), and the inference rate."""
    ml = [m for m in members if m.closure == "ml" and m.cost and "mpistage_s" in m.cost]
    if not ml:
        return {}
    wall = sum(m.cost["wall_s"] for m in ml)
    spent = sum(m.cost["mpistage_s"] for m in ml)
    calls = sum(m.cost["network_calls"] for m in ml)
    points = sum(m.cost["network_calls"] * m.eke.size for m in ml if m.eke is not None)
    out: dict[str, Any] = {
        "members": len(ml), "wall_s": wall, "mpistage_s": spent, "mpistage_percent": 100 * spent / wall,
        "per_member_percent": {m.name: m.cost["mpistage_percent"] for m in ml},
        "network_calls": int(calls), "points_inferred": int(points),
        "calls_per_s_in_calls": calls / spent if spent else math.nan,
        "points_per_s_in_calls": points / spent if spent else math.nan,
        "points_per_s_of_run": points / wall}
    if engine:
        compute = engine["model_compute_s"] + engine["script_compute_s"]
        queued = engine["model_queue_s"] + engine["script_queue_s"]
        rest = max(spent - compute - queued, 0.0)
        out.update(engine=engine, server_compute_s=compute, server_queue_s=queued,
                   points_per_s_of_server_compute=engine["model_rows"] / engine["model_compute_s"]
                   if engine["model_compute_s"] else math.nan,
                   other_s=rest, other_percent=100 * rest / wall,
                   other_ms_per_call=1000 * rest / calls if calls else math.nan)
    return out


def change(ml: float | None, base: float | None) -> float | None:
    """(ml - base) / base in percent."""
    if ml is None or base is None or base == 0:
        return None
    return 100 * (ml - base) / base


def fmt(x: Any, spec: str = ".4f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def build_report(out: Path) -> dict[str, Any]:
    """Everything the report says, as one JSON-able mapping (also the input of the figures)."""
    meta = json.loads((out / "ensemble.json").read_text())
    members = [load_member(out, rec) for rec in meta["members"]]
    training_file = out / "trainer" / "training.json"
    training = json.loads(training_file.read_text()) if training_file.exists() else {"rounds": []}
    fine_diag, fine_cost = read_diag(out / "fine" / "diag.txt")
    result: dict[str, Any] = {"plan": meta["plan"], "phases": meta.get("phases", {}), "discard_days": DISCARD_DAYS,
                              "paper": PAPER, "scores": {}, "comparison": {}, "training": training.get("rounds", []),
                              "fine": {"time_mean_ke": float(fine_diag[:, 1].mean()) if fine_diag is not None
                                       and fine_diag.size else None, **fine_cost}}
    for factor in sorted({m.factor for m in members}):
        path = out / "trainer" / f"truth_f{factor}.npy"
        if not path.exists():
            result["comparison"][str(factor)] = {"error": f"no truth map {path.name}"}
            continue
        truth = np.load(path)
        for closure in ("ml", "meke"):
            group = [m for m in members if m.factor == factor and m.closure == closure]
            if group:
                result["scores"][f"{closure}_f{factor}"] = score(group, truth)
        ml, meke = result["scores"].get(f"ml_f{factor}", {}), result["scores"].get(f"meke_f{factor}", {})
        result["comparison"][str(factor)] = {
            "eke_change_percent": change(ml.get("rmse_eke"), meke.get("rmse_eke")),
            "ln_eke_change_percent": change(ml.get("rmse_ln_eke"), meke.get("rmse_ln_eke"))}
    result["cost"] = cost(members, engine_totals(out))
    result["stability"] = {m.name: {"stable": m.stable, "status": m.status, "days": int(m.diag.shape[0])
                                    if m.diag is not None else 0,
                                    "min_h": float(m.diag[:, 2].min()) if m.diag is not None and m.diag.size else None,
                                    "max_speed": float(m.diag[:, 4].max()) if m.diag is not None and m.diag.size
                                    else None, "snapshots_scored": m.snapshots} for m in members}
    result["all_stable"] = all(v["stable"] for v in result["stability"].values())
    result["verdict"] = verdict(result)
    result["_members"] = members
    return result


def verdict(r: dict[str, Any]) -> list[str]:
    """Plain sentences: does the ML closure beat the baseline, is the coupling cheap, did everything hold."""
    lines = []
    for factor, c in r["comparison"].items():
        if "error" in c:
            lines.append(f"factor {factor}: not scored ({c['error']}).")
            continue
        ml, meke = r["scores"].get(f"ml_f{factor}", {}), r["scores"].get(f"meke_f{factor}", {})
        d = c["eke_change_percent"]
        if d is None:
            lines.append(f"factor {factor}: no comparison (ML or MEKE members missing or without snapshots).")
            continue
        if d >= 0:
            word = "does NOT beat"
        elif ml.get("near_uniform"):
            word = "has a lower RMSE (but a near-uniform map, so no skill; below) than"
        else:
            word = "beats"
        lines.append(f"factor {factor}: the ML closure {word} the MEKE baseline on the RMSE of EKE "
                     f"({ml['rmse_eke']:.4f} vs {meke['rmse_eke']:.4f} m^2/s^2, {d:+.0f} %; paper -20 %); "
                     f"ln EKE {ml['rmse_ln_eke']:.2f} vs {meke['rmse_ln_eke']:.2f} "
                     f"({c['ln_eke_change_percent']:+.0f} %); pattern correlation of ln EKE with the truth "
                     f"{fmt(ml['pattern_corr_ln_eke'], '.2f')} vs {fmt(meke['pattern_corr_ln_eke'], '.2f')}.")
        for name, g in (("ML", ml), ("MEKE", meke)):
            if g.get("near_uniform"):
                lines.append(f"factor {factor}: the {name} EKE map is near-uniform (spatial std of ln EKE "
                             f"{g['spatial_std_ln_eke']:.2f} against the truth's {g['truth_spatial_std_ln_eke']:.2f}): "
                             "it predicts about one value everywhere, so its RMSE says how close that value is to "
                             "the truth's typical level, not that it has the pattern.")
    if r["cost"]:
        p = r["cost"]["mpistage_percent"]
        lines.append(f"coupling: {p:.2f} % of the ML members' run time in mpistage calls "
                     f"({'within' if p <= GOAL_PERCENT else 'over'} the 1 % goal; paper 1.5 %).")
        if "other_percent" in r["cost"]:
            c = r["cost"]
            lines.append(f"of the {c['mpistage_s']:.1f} s in calls, the servers computed (network + preprocessing) "
                         f"{c['server_compute_s']:.1f} s and requests waited in their queues (behind the other "
                         f"members' inference) {c['server_queue_s']:.1f} s; the rest (connect, transfers, "
                         f"scheduling) is {c['other_s']:.1f} s = {c['other_percent']:.2f} % of the run time, "
                         f"{c['other_ms_per_call']:.1f} ms per daily call.")
    f = r["fine"]
    if "mpistage_percent" in f:
        lines.append(f"streaming: the fine run spent {f['mpistage_s']:.1f} s of {f['wall_s']:.0f} s "
                     f"({f['mpistage_percent']:.2f} %) in mpistage calls (connect and its snapshots' puts).")
    unstable = [k for k, v in r["stability"].items() if not v["stable"]]
    lines.append("every member stayed stable." if not unstable else f"NOT stable or incomplete: {', '.join(unstable)}.")
    return lines


def table(r: dict[str, Any]) -> str:
    """The main table (markdown)."""
    rows = ["| factor | closure | members | RMSE EKE (m²/s²) | RMSE ln EKE | ens.-mean RMSE EKE | pattern corr. ln EKE "
            "| domain-mean EKE (truth) | time-mean KE |", "|---|---|---|---|---|---|---|---|---|"]
    for key, s in r["scores"].items():
        closure, factor = key.split("_f")
        if not s.get("scored"):
            rows.append(f"| {factor} | {closure} | {s['members']} (none scored) | - | - | - | - | - | - |")
            continue
        rows.append(f"| {factor} | {closure} | {s['scored']}/{s['members']} | {s['rmse_eke']:.4f} ± "
                    f"{s['rmse_eke_spread']:.4f} | {s['rmse_ln_eke']:.2f} | {s['ensemble_mean_rmse_eke']:.4f} | "
                    f"{fmt(s['pattern_corr_ln_eke'], '.2f')} | {s['domain_mean_eke']:.4f} "
                    f"({s['truth_domain_mean_eke']:.4f}) | {s['time_mean_ke']:.4f} |")
    for factor, c in r["comparison"].items():
        if "error" not in c:
            rows.append(f"| {factor} | ML vs MEKE | | {fmt(c['eke_change_percent'], '+.0f')} % | "
                        f"{fmt(c['ln_eke_change_percent'], '+.0f')} % | | | | |")
    return "\n".join(rows)


def markdown(r: dict[str, Any], figures: list[str]) -> str:
    """report.md."""
    plan, c = r["plan"], r["cost"]
    parts = ["# Ocean EKE example: report", "",
             f"Fine run {plan['fine_days']} days (snapshot every {plan['snapshot_interval']} days); members "
             f"{plan['members_f4']} at factor 4 and {plan['members_f8']} at factor 8 per closure, "
             f"{plan['member_days']} days each; maps are time means after the first "
             f"{min(DISCARD_DAYS, plan['member_days'] // 4)} days, RMSE over interior cells.", "",
             "## Verdict", "", *[f"- {x}" for x in r["verdict"]], "", "## EKE against the coarse-grained truth", "",
             table(r), "", f"Paper: RMSE of EKE {PAPER['rmse_eke_ml']} (ML) vs {PAPER['rmse_eke_meke']} m²/s² "
             "(MEKE), -20 %. The fine run's time-mean KE: " + fmt(r["fine"].get("time_mean_ke")) + " m²/s².", ""]
    if c:
        parts += ["## Cost of the coupling (ML members)", "",
                  "| members | run time (s, summed) | in mpistage calls (s) | share | network calls | "
                  "points inferred | points/s in calls | points/s of run |", "|---|---|---|---|---|---|---|---|",
                  f"| {c['members']} | {c['wall_s']:.1f} | {c['mpistage_s']:.2f} | {c['mpistage_percent']:.2f} % | "
                  f"{c['network_calls']} | {c['points_inferred']} | {c['points_per_s_in_calls']:.0f} | "
                  f"{c['points_per_s_of_run']:.0f} |", "",
                  *([f"Server side (all shards): {c['engine']['model_requests']:.0f} network runs, "
                     f"{c['engine']['model_rows']:.0f} points, {c['engine']['model_compute_s']:.1f} s computing the "
                     f"network ({c['points_per_s_of_server_compute']:.0f} points/s), "
                     f"{c['engine']['script_compute_s']:.1f} s the preprocessing script, "
                     f"{c['server_queue_s']:.1f} s queued (behind other members' requests); "
                     f"the rest of the time in calls (connect, transfers, scheduling) is {c['other_s']:.1f} s = "
                     f"{c['other_percent']:.2f} % of the run time, {c['other_ms_per_call']:.1f} ms per daily call "
                     "(features put, script, network, EKE back).", ""] if "engine" in c else []),
                  "Per member: " + ", ".join(f"{k} {v:.2f} %" for k, v in c["per_member_percent"].items()) +
                  f". Goal {GOAL_PERCENT} %, paper {PAPER['mpistage_percent']} %. On this shared 2-core machine the "
                  "members, the server ranks and other jobs share the cores, which inflates both numbers.", ""]
    parts += ["## Stability", "", "| member | status | days | min h (m) | max speed (m/s) | snapshots scored |",
              "|---|---|---|---|---|---|"]
    for name, s in r["stability"].items():
        parts.append(f"| {name} | {s['status']}{'' if s['stable'] else ' (NOT stable)'} | {s['days']} | "
                     f"{fmt(s['min_h'], '.1f')} | {fmt(s['max_speed'], '.2f')} | {s['snapshots_scored']} |")
    parts += ["", "## Training (online, from the streamed fine run)", "",
              "| round | snapshots | samples | train loss | held-out RMSE ln EKE | published | s |",
              "|---|---|---|---|---|---|---|"]
    for t in r["training"]:
        parts.append(f"| {t.get('round')} | {t.get('snapshots')} | {t.get('samples')} | {fmt(t.get('train_loss'))} | "
                     f"{fmt(t.get('heldout_rmse_ln_eke'), '.3f')} | {t.get('published')} | "
                     f"{fmt(t.get('seconds'), '.1f')} |")
    if figures:
        parts += ["", "## Figures", "", *[f"![{f}]({f})" for f in figures]]
    return "\n".join(parts) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: writes report.md, report.json and the figures; prints the table. Returns 0."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="the output directory of run.py")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    args = p.parse_args(argv)
    out = args.out.resolve()
    if not (out / "ensemble.json").exists():
        raise SystemExit(f"{out}: no ensemble.json (not an output directory of examples/ocean/run.py)")
    r = build_report(out)
    members = r.pop("_members")
    figures: list[str] = []
    if not args.no_figures:
        try:
            from ocean import figures as figs
        except ImportError as exc:  # matplotlib missing
            r["verdict"].append(f"figures skipped: {exc} (pip install -e '.[ocean]')")
        else:
            figures = figs.draw(out, r, members)
    (out / "report.json").write_text(json.dumps(r, indent=1))
    (out / "report.md").write_text(markdown(r, figures))
    print(table(r))
    print("\n".join(r["verdict"]))
    if r["cost"]:
        print(f"mpistage calls: {r['cost']['mpistage_percent']:.2f} % of the ML members' run time; "
              f"{r['cost']['points_per_s_in_calls']:.0f} points/s inferred while in calls")
    where = f"; figures: {', '.join(str(out / f) for f in figures)}" if figures else ""
    print(f"report: {out / 'report.md'}{where}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
