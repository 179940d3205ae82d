"""The ocean EKE example end to end: one mpistage Experiment, in situ training, a coupled ensemble, a report.

    .venv/bin/python examples/ocean/run.py                 # --demo (default): minutes on 2 cores
    .venv/bin/python examples/ocean/run.py --full          # longer training data and members
    .venv/bin/python examples/ocean/run.py --out DIR       # where everything goes (default ocean-run/)

Phases (docs/ocean.md):

1. a database of 2 server ranks; the fine (12.5 km) run, started from the shipped year-5 restart
   (``restarts/``), streams its fields into the store every ``snapshot_interval`` days while the
   trainer (``trainer.py``, another entity of the experiment) trains EKEResNet on them and publishes
   each improved network;
2. the coupled ensemble: coarse members at factor 4 and 8 started from different fine states
   (restricted with ``restrict.py``), with ``closure = ml`` (one network for both resolutions) and the
   same members with the MEKE-like baseline (constants per resolution from ``configs.py``);
3. ``report.py`` on the output directory: RMSE against the coarse-grained truth, cost, figures.

Every entity runs in its own directory under ``--out`` (SmartSim's layout); progress goes to stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
from ocean import configs, restrict, state  # noqa: E402
from ocean.build import build  # noqa: E402

#: the fine run's state after a 5-year spin-up from rest, its clock set to day 0 (restarts/make_restart.py)
RESTART = HERE / "restarts" / "fine_year5.bin.gz"
FACTORS = (4, 8)
SHARDS = 2
CONNECT_WAIT_SECONDS = 120.0


@dataclass(frozen=True)
class Plan:
    """What one run does: lengths in model days, counts of members, training schedule."""

    fine_days: int
    snapshot_interval: int
    min_snapshots: int
    members_f4: int
    members_f8: int
    member_days: int
    member_output_interval: int
    coupling_interval: int = 1
    fine_ranks: int = 1
    rounds: int | None = None
    epochs: int | None = None
    epoch_samples: int | None = None
    member_timeout: float = 1800.0
    seed: int = 0

    def check(self) -> None:
        """Raises ValueError for a plan that cannot run."""
        if min(self.fine_days, self.snapshot_interval, self.member_days, self.member_output_interval) < 1:
            raise ValueError("days and intervals must be at least 1")
        if self.fine_days < self.snapshot_interval:
            raise ValueError(f"fine_days {self.fine_days} gives no snapshot every {self.snapshot_interval} days")
        if self.members_f4 < 0 or self.members_f8 < 0 or self.members_f4 + self.members_f8 == 0:
            raise ValueError("the ensemble needs at least one member")
        if self.fine_ranks < 1:
            raise ValueError("the fine run needs at least one rank")


DEMO = Plan(fine_days=365, snapshot_interval=5, min_snapshots=25, members_f4=4, members_f8=2,
            member_days=120, member_output_interval=5, member_timeout=900.0)
FULL = Plan(fine_days=1825, snapshot_interval=5, min_snapshots=73, members_f4=4, members_f8=2,
            member_days=730, member_output_interval=5, member_timeout=7200.0)


def log(msg: str) -> None:
    """One progress line, flushed."""
    print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)


def start_days(plan: Plan) -> tuple[int, dict[int, list[int]]]:
    """The fine run's state-file interval and, per factor, the fine day each member starts from.

    States are written every ``fine_days // n`` days (n = the larger member count); factor-4
    members take states 1..n4, factor-8 members states spread evenly over the same list.
    """
    n = max(plan.members_f4, plan.members_f8)
    interval = max(1, plan.fine_days // n)
    days = [interval * k for k in range(1, n + 1)]
    starts = {4: days[:plan.members_f4],
              8: [days[math.ceil((i + 1) * n / plan.members_f8) - 1] for i in range(plan.members_f8)]}
    return interval, starts


def fine_namelist(plan: Plan, interval: int) -> configs.Namelist:
    """The fine run: from the restart, snapshots streamed every ``snapshot_interval`` days, states to files."""
    return configs.merged(configs.FINE,
                          run={"days": plan.fine_days, "restart_in": "start.bin", "diag_file": "diag.txt",
                               "output_prefix": "state", "output_interval": interval},
                          coupling={"stream": True, "snapshot_interval": plan.snapshot_interval, "run_name": "fine"})


def member_namelist(plan: Plan, factor: int, scheme: str, run_name: str) -> configs.Namelist:
    """A coarse member: ``scheme`` = ml (kappa = alpha sqrt(EKE) L, alpha of the MEKE constants at
    this resolution, the network every ``coupling_interval`` model days) or meke (the prognostic baseline)."""
    nml = configs.merged(configs.coarse(factor, scheme),
                         run={"days": plan.member_days, "restart_in": "start.bin", "diag_file": "diag.txt",
                              "output_prefix": "snap", "output_interval": plan.member_output_interval})
    if scheme == "ml":
        nml["closure"].update(ml_alpha=configs.COARSE[factor]["meke_alpha"], coupling_interval=plan.coupling_interval)
        nml["coupling"] = {"run_name": run_name}
    return nml


def trainer_args(plan: Plan, out: Path) -> list[str]:
    """The trainer's command line (the interface of examples/ocean/trainer.py)."""
    last = plan.fine_days - plan.fine_days % plan.snapshot_interval
    args = [str(HERE / "trainer.py"), "--run-name", "fine", "--nranks", str(plan.fine_ranks),
            "--factors", *map(str, FACTORS), "--snapshot-interval", str(plan.snapshot_interval),
            "--last-day", str(last), "--min-snapshots", str(plan.min_snapshots), "--seed", str(plan.seed),
            "--out", str(out)]
    if plan.rounds is not None:
        args += ["--rounds", str(plan.rounds)]
    if plan.epochs is not None:
        args += ["--epochs", str(plan.epochs)]
    if plan.epoch_samples is not None:
        args += ["--epoch-samples", str(plan.epoch_samples)]
    return args


def last_line(path: Path) -> str:
    """The last non-empty line of a text file ('' if none yet)."""
    try:
        lines = [x for x in path.read_text(errors="replace").splitlines() if x.strip()]
    except FileNotFoundError:
        return ""
    return lines[-1].strip() if lines else ""


def model_day(diag: Path) -> int | None:
    """The last model day in a diagnostics file (its last line that is not a comment), None before the first."""
    try:
        lines = [x for x in diag.read_text(errors="replace").splitlines() if x.strip() and not x.startswith("#")]
        return int(float(lines[-1].split()[0])) if lines else None
    except (FileNotFoundError, ValueError, IndexError):
        return None


def failed(exp, entities, what: str) -> None:  # noqa: ANN001  (Experiment and its entities)
    """Stop (SystemExit) naming the entities that did not complete, with the end of their stderr."""
    from mpistage import Status

    bad = [m for e in entities for m, s in zip(e.models, exp.get_status(e), strict=True) if s is not Status.COMPLETED]
    if bad:
        tails = "\n".join(f"--- {m.name} ({m.path}):\n{last_line(m.path / f'{m.name}.err')}" for m in bad)
        raise SystemExit(f"{what}: {', '.join(m.name for m in bad)} did not complete (see their .out/.err)\n{tails}")


def warm_engine(address: str) -> float:
    """Make the server ranks load torch now (a trivial script, set and deleted), while the fine run
    streams, rather than at the trainer's first publish; returns the seconds it took."""
    from mpistage import Client

    t0 = time.monotonic()
    client = Client(address=address)
    client.set_script("ocean_warmup", "def identity(x):\n    return x\n")
    client.delete_script("ocean_warmup")
    return time.monotonic() - t0


def run_training(exp, address: str, plan: Plan, out: Path, exe: Path, interval: int) -> None:  # noqa: ANN001
    """Phase 1: the fine run streaming snapshots and the trainer, both entities, until both end."""
    rs = exp.create_run_settings(str(exe), ["fine.nml"], env_vars={"GFORTRAN_UNBUFFERED_ALL": "1"})
    rs.set_tasks(plan.fine_ranks)
    fine = exp.create_model("fine", rs)
    trs = exp.create_run_settings(sys.executable, trainer_args(plan, out / "trainer"),
                                  env_vars={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    trainer = exp.create_model("trainer", trs)
    exp.generate(fine, trainer, overwrite=True)
    (fine.path / "start.bin").write_bytes(gzip.decompress(RESTART.read_bytes()))
    state.write_namelist(fine.path / "fine.nml", fine_namelist(plan, interval))
    log(f"phase 1: fine run ({configs.FINE_CELLS}x{configs.FINE_CELLS}, {plan.fine_ranks} rank(s), "
        f"{plan.fine_days} days, a snapshot every {plan.snapshot_interval} days) and the trainer")
    exp.start(fine, trainer, block=False, timeout=plan.member_timeout)
    log(f"database: torch loaded on the server ranks in {warm_engine(address):.1f} s")
    shown = ("", "")
    while not (exp.finished(fine) and exp.finished(trainer)):
        day = model_day(fine.path / "diag.txt")
        now = (f"fine day {day if day is not None else '-'}/{plan.fine_days}",
               last_line(trainer.path / "trainer.out"))
        if now != shown:
            log(f"phase 1: {now[0]} | {now[1] or 'trainer: starting'}")
            shown = now
        time.sleep(2.0)
    log(f"phase 1: fine {exp.get_status(fine)[0].value}, trainer {exp.get_status(trainer)[0].value}: "
        f"{last_line(trainer.path / 'trainer.out')}")
    failed(exp, [fine, trainer], "phase 1")


def start_connected(exp, member, timeout: float, bound: float = CONNECT_WAIT_SECONDS) -> None:  # noqa: ANN001
    """Start ``member`` (a coupled ocean run) and wait until it has connected to the servers (its
    ``diag.txt`` is opened after the connect), at most ``bound`` seconds.

    A workaround: with several members connecting at once, a server-side accept failed with
    MPI_ERR_UNKNOWN ("orted timedout") and the other connecting members then hung in connect
    (docs/launcher.md's known intermittent hang; seen once with 6 members at once). One connect at
    a time costs about a second per member.
    """
    exp.start(member, block=False, timeout=timeout)
    deadline = time.monotonic() + bound
    while not (member.path / "diag.txt").exists() and not exp.finished(member) and time.monotonic() < deadline:
        time.sleep(0.2)


def run_ensemble(exp, plan: Plan, out: Path, exe: Path, starts: dict[int, list[int]]) -> list[dict]:  # noqa: ANN001
    """Phase 2: the ML and the MEKE ensembles from restricted fine states; returns the members' records."""
    factors = [4] * plan.members_f4 + [8] * plan.members_f8
    days = starts[4] + starts[8]
    rs = exp.create_run_settings(str(exe), ["member.nml"])
    ensembles = {scheme: exp.create_ensemble(scheme, params={"factor": factors, "start_day": days},
                                             run_settings=rs, perm_strategy="step")
                 for scheme in ("ml", "meke")}
    exp.generate(*ensembles.values(), overwrite=True)
    fine_dir = out / "fine"
    members = []
    for scheme, ens in ensembles.items():
        for m in ens.models:
            f, d = int(m.params["factor"]), int(m.params["start_day"])
            fine_state = state.read_state(fine_dir / f"state_d{d:06d}.bin")
            e0 = 1.0e-3 if scheme == "meke" else 0.0  # MEKE starts at meke_e0; ML gets EKE at its first step
            restrict.write_state(m.path / "start.bin", restrict.restrict(fine_state, f, e0))
            state.write_namelist(m.path / "member.nml", member_namelist(plan, f, scheme, m.name))
            members.append({"name": m.name, "closure": scheme, "factor": f, "start_day": d,
                            "days": plan.member_days, "dir": str(m.path.relative_to(out))})
    log(f"phase 2: {len(members)} coarse members ({plan.members_f4} at factor 4, {plan.members_f8} at factor 8, "
        f"closure ml and meke), {plan.member_days} days each")
    exp.start(ensembles["meke"], block=False, timeout=plan.member_timeout)
    for m in ensembles["ml"].models:  # one connect at a time: see start_connected
        start_connected(exp, m, plan.member_timeout)
    exp.poll(interval=10)  # the launcher's status lines until every member has ended
    for rec, status in zip(members, exp.get_status(*ensembles.values()), strict=True):
        rec["status"] = status.value
    return members


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: run the experiment, then the report; returns the exit status."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--demo", action="store_true", help="the small run (default)")
    mode.add_argument("--full", action="store_true", help="5 years of training data, members of 2 years")
    p.add_argument("--out", type=Path, default=Path("ocean-run"), help="output directory (default ocean-run/)")
    p.add_argument("--launcher", default="mpiexec", choices=("auto", "spawn", "mpiexec"),
                   help="how the experiment starts its members (default mpiexec)")
    for field in dataclasses.fields(Plan):
        p.add_argument(f"--{field.name.replace('_', '-')}", dest=field.name, default=None,
                       type=float if field.type in (float, "float") else int, help=f"override the plan's {field.name}")
    args = p.parse_args(argv)
    base = FULL if args.full else DEMO
    plan = dataclasses.replace(base, **{f.name: getattr(args, f.name) for f in dataclasses.fields(Plan)
                                        if getattr(args, f.name) is not None})
    plan.check()
    out = args.out.resolve()
    earlier = (out / "ensemble.json").exists() or (out / ".mpistage").exists()
    if out.exists() and any(out.iterdir()) and not earlier:
        raise SystemExit(f"{out} exists and is not an earlier run's output: choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    if not RESTART.exists():
        raise SystemExit(f"{RESTART} is missing: run examples/ocean/restarts/make_restart.py")

    from mpistage import Client, Experiment

    t0 = time.monotonic()
    log("building the model (make)")
    exe = build()
    interval, starts = start_days(plan)
    with Experiment("ocean", exp_path=out, launcher=args.launcher) as exp:
        # one torch thread per server rank: the cores are shared with the members (docs/ocean.md)
        db = exp.create_database(db_nodes=SHARDS, server_args=["--threads", "1"])
        exp.start(db)
        log(f"database: {SHARDS} server ranks, address {db.get_address()[0]}")
        t1 = time.monotonic()
        run_training(exp, db.get_address()[0], plan, out, exe, interval)
        t2 = time.monotonic()
        members = run_ensemble(exp, plan, out, exe, starts)
        t3 = time.monotonic()
        info = Client(address=db.get_address()[0]).get_server_info()
        (out / "server_info.json").write_text(json.dumps(info, indent=1, default=str))
        exp.summary()
        exp.stop(db)
    phases = {"setup_s": t1 - t0, "training_s": t2 - t1, "ensemble_s": t3 - t2}
    (out / "ensemble.json").write_text(json.dumps({"plan": dataclasses.asdict(plan), "members": members,
                                                   "phases": phases, "launcher": args.launcher}, indent=1))
    from ocean import report

    rc = report.main([str(out)])
    log(f"done in {time.monotonic() - t0:.0f} s (phase 1 {phases['training_s']:.0f} s, "
        f"ensemble {phases['ensemble_s']:.0f} s); report and figures in {out}")
    bad = [m["name"] for m in members if m["status"] != "Completed"]
    return 1 if bad or rc else 0


if __name__ == "__main__":
    raise SystemExit(main())
