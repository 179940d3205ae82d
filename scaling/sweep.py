"""Scaling sweep of the paper's loop (scaling/paper_loop.py, .f90): client counts x shard counts,
strong and weak scaling, MPMD / connect / launcher mode, one host or several virtual hosts
(scaling/netns.py), Python or Fortran clients; fresh server ranks for every configuration.

    .venv/bin/python scaling/sweep.py --small                 # the small sweep (< 10 min here)
    .venv/bin/python scaling/sweep.py --clients 1 2 4 8 --shards 1 2 4 --iterations 100 ...

Prints one progress line per configuration. Writes into ``--out`` (default
``scaling/results/<date>/``): ``records.csv`` (one row per rank, iteration and call:
mode,hosts,shards,clients,scaling,workload,client,rank,iteration,call,seconds), ``summary.json``
(per configuration and call: count, mean, p50, p99, min, max; per configuration: throughput and
wall time), ``run.json`` (what ran, on what machine), then the plots (scaling/plots.py) and the
performance model's fit and predictions (scaling/perf_model.py).

Every job runs in its own process group under a timeout; a configuration that fails or times
out is reported and recorded as failed, and the sweep goes on.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

from mpistage.jobs import JobTimeout, run_bounded, server_command  # noqa: E402

PY = sys.executable
CLI = [PY, "-m", "mpistage.cli"]
CONFIG_FIELDS = ("mode", "hosts", "shards", "clients", "scaling", "workload", "client")
CALLS = ("put", "script", "model", "unpack", "iteration")


@dataclass(frozen=True)
class Config:
    """One configuration of the sweep; ``iterations`` per rank (weak) or in all (strong)."""

    mode: str        # mpmd | connect | launcher
    hosts: int       # 1, or the number of virtual hosts (servers on host 0, clients on the others)
    shards: int
    clients: int
    scaling: str     # weak | strong
    workload: str    # resnet | eke
    client: str      # python | fortran
    iterations: int

    def label(self) -> str:
        where = "1 host" if self.hosts == 1 else f"{self.hosts} virtual hosts"
        return (f"{self.mode:8s} {where:16s} {self.workload:6s} {self.scaling:6s} {self.client:7s} "
                f"{self.shards} shard(s) x {self.clients:2d} client(s)")


class ConfigFailed(RuntimeError):
    """A configuration's job failed or ran past its timeout."""


# ------------------------------------------------------------------ building and commands

def build_fortran(tmp: Path) -> Path:
    """Build fortran/ and scaling/paper_loop.f90 (flags from mpistage-config); the executable."""
    from mpistage.fortran_config import fflags, flibs, prefix

    _run(["make", "-s", "-C", str(ROOT / "fortran")], 600)
    exe = tmp / "paper_loop"
    where = prefix()
    _run(["mpif90", "-O2", "-ffree-line-length-none", str(HERE / "paper_loop.f90"), *fflags(where).split(),
          *flibs(where).split(), f"-J{tmp}", "-o", str(exe)], 300)
    return exe


def export_models(tmp: Path, workloads: Sequence[str]) -> Path:
    """The models and scripts the workloads need, exported into ``tmp/models``."""
    from inference.eke_features import EKE_PREPROCESS_SCRIPT
    from inference.export import (
        EKE_PREPROCESS_FILE,
        EKE_RESNET_FILE,
        PRE_PROCESS_3CH_FILE,
        RESNET50_FILE,
        export_eke_resnet,
        export_resnet50,
        write_script,
    )
    from inference.resnet50 import PRE_PROCESS_3CH_SCRIPT

    out = tmp / "models"
    if "eke" in workloads:
        export_eke_resnet(out / EKE_RESNET_FILE)
        write_script(out / EKE_PREPROCESS_FILE, EKE_PREPROCESS_SCRIPT)
    if "resnet" in workloads:
        export_resnet50(out / RESNET50_FILE)
        write_script(out / PRE_PROCESS_3CH_FILE, PRE_PROCESS_3CH_SCRIPT)
    return out


def client_command(cfg: Config, models: Path, out: Path, batch_size: int, fortran_exe: Path | None) -> list[str]:
    """The client program's command line for ``cfg``, writing its CSVs into ``out``."""
    total = cfg.iterations if cfg.scaling == "strong" else None
    if cfg.client == "fortran":
        if fortran_exe is None:
            raise ValueError("a Fortran configuration needs the built paper_loop")
        return [str(fortran_exe), cfg.workload, str(cfg.iterations), str(-1 if total is None else total),
                str(models), str(batch_size), str(out)]
    cmd = [PY, str(HERE / "paper_loop.py"), "--workload", cfg.workload, "--setup", str(models),
           "--batch-size", str(batch_size), "--out", str(out)]
    return [*cmd, "--total", str(total)] if total is not None else [*cmd, "--iterations", str(cfg.iterations)]


def _run(cmd: Sequence[str], timeout: float, env: dict[str, str] | None = None) -> str:
    try:
        result = run_bounded(cmd, timeout, env)
    except JobTimeout as exc:
        raise ConfigFailed(f"timed out after {timeout} s: {exc.output[-2000:]}") from None
    if result.returncode:
        raise ConfigFailed(f"exit {result.returncode}: {' '.join(map(str, cmd))}\n{result.stdout[-2000:]}")
    return result.stdout


# ------------------------------------------------------------------ the modes

def run_mpmd(cfg: Config, client: list[str], timeout: float, server_args: str, vhosts=None) -> None:
    """``mpiexec -n S mpistage-server : -n N client``; across virtual hosts when ``vhosts``."""
    if vhosts is None:
        _run([*CLI, "launch", "--servers", str(cfg.shards), "--server-args", server_args, "-n", str(cfg.clients),
              "--", *client], timeout)
        return
    from mpistage.jobs import mpi_environ

    servers = [*server_command(), *shlex.split(server_args)]
    cmd = ["mpiexec", "--host", vhosts.host_list([0], cfg.shards), "-n", str(cfg.shards), *servers,
           ":", "--host", vhosts.host_list(range(1, vhosts.n), cfg.clients), "--map-by", "node",
           "-n", str(cfg.clients), *client]
    _run(vhosts.wrap(cmd), timeout, vhosts.environ(mpi_environ()))


def run_connect(cfg: Config, client: list[str], timeout: float, server_args: str, tmp: Path) -> None:
    """``mpistage start`` the servers, ``mpistage run`` the clients, ``mpistage stop``."""
    run_dir = tmp / "servers"
    _run([*CLI, "start", "--shards", str(cfg.shards), "--server-args", server_args, "--dir", str(run_dir)], timeout)
    try:
        _run([*CLI, "run", "--dir", str(run_dir), "-n", str(cfg.clients), "--", *client], timeout)
    finally:
        _run([*CLI, "stop", "--dir", str(run_dir)], 120)


def run_launcher(cfg: Config, client: list[str], timeout: float, server_args: str, tmp: Path, launcher: str) -> None:
    """Through ``mpistage.Experiment`` (a database of S shards, one model of N ranks), in a
    subprocess of its own (``--launcher-job``) so this process never initializes MPI."""
    job = {"shards": cfg.shards, "clients": cfg.clients, "command": client, "exp_path": str(tmp / "exp"),
           "launcher": launcher, "timeout": timeout, "server_args": shlex.split(server_args)}
    _run([PY, str(Path(__file__).resolve()), "--launcher-job", json.dumps(job)], timeout + 60)


def launcher_job(spec: str) -> None:
    """The ``--launcher-job`` role: start the database, run the model, stop the database."""
    from mpistage import Experiment, Status

    job = json.loads(spec)
    exp = Experiment("paper_loop", exp_path=job["exp_path"], launcher=job["launcher"])
    try:
        db = exp.create_database(db_nodes=job["shards"], server_args=job["server_args"])
        exp.start(db)
        rs = exp.create_run_settings(job["command"][0], job["command"][1:])
        rs.set_tasks(job["clients"])
        model = exp.create_model("loop", rs)
        exp.generate(model)
        exp.start(model, block=True, timeout=job["timeout"])
        status = exp.get_status(model)[0]
        if status != Status.COMPLETED:
            out = Path(job["exp_path"]) / "loop"
            logs = "".join(p.read_text()[-1500:] for p in sorted(out.glob("loop.*")) if p.is_file())
            raise SystemExit(f"launcher: the clients ended {status}\n{logs}")
        exp.stop(db)
    finally:
        exp.close()


# ------------------------------------------------------------------ one configuration

def read_rank_csvs(out: Path, cfg: Config) -> list[dict]:
    """The rank CSVs of one run, each row with the configuration's fields."""
    fields = {k: v for k, v in asdict(cfg).items() if k in CONFIG_FIELDS}
    rows = []
    for path in sorted(out.glob("rank*.csv")):
        with path.open() as f:
            for row in csv.DictReader(f):
                rows.append({**fields, "rank": int(row["rank"]), "iteration": int(row["iteration"]),
                             "call": row["call"].strip(), "seconds": float(row["seconds"])})
    return rows


def summarize_config(cfg: Config, rows: list[dict], wall: float) -> dict:
    """Per call: count, mean, p50, p99, min, max (s); throughput = iterations / slowest rank's loop time."""
    calls = {}
    for call in CALLS:
        t = np.array([r["seconds"] for r in rows if r["call"] == call])
        if t.size:
            calls[call] = {"count": int(t.size), "mean": float(t.mean()), "p50": float(np.median(t)),
                           "p99": float(np.percentile(t, 99)), "min": float(t.min()), "max": float(t.max())}
    loop = {}
    for r in rows:
        if r["call"] == "iteration":
            loop[r["rank"]] = loop.get(r["rank"], 0.0) + r["seconds"]
    iterations = calls.get("iteration", {}).get("count", 0)
    throughput = iterations / max(loop.values()) if loop and max(loop.values()) > 0 else 0.0
    return {**asdict(cfg), "ok": True, "wall_s": round(wall, 2), "ranks_reporting": len(loop),
            "throughput_it_per_s": throughput, "calls": calls}


def run_config(cfg: Config, models: Path, batch_size: int, timeout: float, fortran_exe: Path | None,
               vhosts, launcher: str, server_args: str = "") -> tuple[list[dict], dict]:
    """Run one configuration on fresh servers; its rows and summary (``ok`` False when it failed)."""
    with tempfile.TemporaryDirectory(prefix="mpistage-sweep-") as tmpdir:
        tmp = Path(tmpdir)
        out = tmp / "records"
        out.mkdir()
        client = client_command(cfg, models, out, batch_size, fortran_exe)
        t0 = time.monotonic()
        try:
            if cfg.hosts > 1:
                run_mpmd(cfg, client, timeout, server_args, vhosts)
            elif cfg.mode == "mpmd":
                run_mpmd(cfg, client, timeout, server_args)
            elif cfg.mode == "connect":
                run_connect(cfg, client, timeout, server_args, tmp)
            else:
                run_launcher(cfg, client, timeout, server_args, tmp, launcher)
        except ConfigFailed as exc:
            return [], {**asdict(cfg), "ok": False, "wall_s": round(time.monotonic() - t0, 2), "error": str(exc)}
        rows = read_rank_csvs(out, cfg)
        summary = summarize_config(cfg, rows, time.monotonic() - t0)
        if summary["ranks_reporting"] != cfg.clients and cfg.scaling == "weak":
            summary.update(ok=False, error=f"{summary['ranks_reporting']} of {cfg.clients} ranks wrote records")
        return rows, summary


# ------------------------------------------------------------------ the sweep

def plan(args: argparse.Namespace) -> list[Config]:
    """The configurations to run, in order."""
    configs = []
    for workload in args.workloads:
        iterations = args.resnet_iterations if workload == "resnet" else args.iterations
        for mode in args.modes:
            for scaling in args.scaling:
                for shards in args.shards:
                    for clients in args.clients:
                        total = iterations * args.strong_total_factor if scaling == "strong" else iterations
                        configs.append(Config(mode, 1, shards, clients, scaling, workload, "python", total))
        if args.fortran:
            for clients in args.fortran_clients:
                configs.append(Config("mpmd", 1, 1, clients, "weak", workload, "fortran", iterations))
        if args.hosts > 1:
            for shards in args.host_shards:
                for clients in args.host_clients:
                    configs.append(Config("mpmd", args.hosts, shards, clients, "weak", workload, "python", iterations))
    return configs


SMALL_ITERATIONS, SMALL_RESNET_ITERATIONS, SMALL_STRONG_TOTAL = 4, 2, 8


def small_plan(args: argparse.Namespace) -> list[Config]:
    """``--small`` (8 configurations, every axis but the virtual hosts touched once; ``--hosts 3``
    adds them) or ``--medium`` (14: also 4 clients, strong scaling on 2 shards, 2 and 4 clients on
    3 virtual hosts, 2 ResNet-50 clients); sized for 2 oversubscribed cores."""
    medium = args.medium
    n = SMALL_ITERATIONS if medium else SMALL_ITERATIONS - 1
    pairs = ((1, 1), (1, 2), (1, 4), (2, 2), (2, 4)) if medium else ((1, 1), (1, 2), (2, 2))
    eke = [Config("mpmd", 1, s, c, "weak", "eke", "python", n) for s, c in pairs]
    strong = ((1, 4), (2, 4)) if medium else ((1, 2),)
    eke += [Config("mpmd", 1, s, c, "strong", "eke", "python", SMALL_STRONG_TOTAL if medium else 2 * n)
            for s, c in strong]
    eke += [Config(m, 1, 1, 2, "weak", "eke", "python", n) for m in ("connect", "launcher")]
    eke += [Config("mpmd", 1, 1, 2, "weak", "eke", "fortran", n)]
    hosts = 3 if medium and not args.no_hosts else args.hosts if args.hosts > 1 else 0
    if hosts:
        eke += [Config("mpmd", hosts, 1, c, "weak", "eke", "python", n) for c in ((2, 4) if medium else (2,))]
    resnet = [Config("mpmd", 1, 1, c, "weak", "resnet", "python", SMALL_RESNET_ITERATIONS)
              for c in ((1, 2) if medium else (1,))]
    return eke + resnet


@contextmanager
def virtual_hosts(configs: Sequence[Config]) -> Iterator[object | None]:
    """The virtual hosts the configurations need, made once for the sweep and removed after."""
    n = max((c.hosts for c in configs), default=1)
    if n == 1:
        yield None
        return
    from netns import VirtualHosts, unavailable

    why = unavailable()
    if why:
        print(f"sweep: skipping the {n}-host configurations: {why}", flush=True)
        yield None
        return
    with VirtualHosts(n) as vh:
        vh.check_tcp()
        yield vh


def machine() -> dict:
    """What ran the sweep, and how loaded it was."""
    return {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "host": platform.node(),
            "cpus": os.cpu_count(), "load_avg": os.getloadavg(), "python": platform.python_version(),
            "oversubscribed": "servers, clients and other users' jobs share these cores"}


def write_records(path: Path, rows: list[dict], append: bool) -> None:
    cols = (*CONFIG_FIELDS, "rank", "iteration", "call", "seconds")
    with path.open("a" if append else "w", newline="") as f:
        w = csv.DictWriter(f, cols)
        if not append:
            w.writeheader()
        w.writerows(rows)


def sweep(configs: Sequence[Config], out: Path, args: argparse.Namespace) -> list[dict]:
    """Run ``configs``, writing records and summaries as it goes; the summaries."""
    out.mkdir(parents=True, exist_ok=True)
    run_info = {"machine_start": machine(), "batch_size": args.batch_size, "server_args": args.server_args,
                "env": args.env,
                "command": sys.argv, "configs": [asdict(c) for c in configs]}
    summaries: list[dict] = []
    write_records(out / "records.csv", [], append=False)
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mpistage-sweep-") as tmpdir, ExitStack() as stack:
        tmp = Path(tmpdir)
        print(f"sweep: {len(configs)} configurations; exporting models", flush=True)
        models = export_models(tmp, sorted({c.workload for c in configs}))
        fortran_exe = None
        if any(c.client == "fortran" for c in configs):
            why = "no mpif90" if not shutil.which("mpif90") else None
            for _attempt in range(2 if why is None else 0):  # a concurrent build of fortran/ can collide
                try:
                    fortran_exe = build_fortran(tmp)
                    break
                except ConfigFailed as exc:
                    why = f"the Fortran build failed: {str(exc)[-300:]}"
                    time.sleep(10)
            if fortran_exe is None:
                print(f"sweep: {why}: skipping the Fortran configurations", flush=True)
                configs = [c for c in configs if c.client != "fortran"]
        vhosts = stack.enter_context(virtual_hosts(configs))
        if vhosts is None:
            configs = [c for c in configs if c.hosts == 1]
        for k, cfg in enumerate(configs, 1):
            print(f"[{k:2d}/{len(configs)}] {cfg.label()} ...", end=" ", flush=True)
            rows, summary = run_config(cfg, models, args.batch_size, args.timeout, fortran_exe, vhosts,
                                       args.launcher, args.server_args)
            summaries.append(summary)
            write_records(out / "records.csv", rows, append=True)
            (out / "summary.json").write_text(json.dumps(summaries, indent=1))
            if summary["ok"]:
                it = summary["calls"].get("iteration", {})
                print(f"{summary['wall_s']:6.1f} s, iteration mean {it.get('mean', 0):.3f} s, "
                      f"{summary['throughput_it_per_s']:.2f} it/s", flush=True)
            else:
                print(f"FAILED after {summary['wall_s']} s: {summary['error'].splitlines()[0][:200]}", flush=True)
    run_info.update(machine_end=machine(), wall_s=round(time.monotonic() - t_start, 1))
    (out / "run.json").write_text(json.dumps(run_info, indent=1))
    return summaries


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", action="store_true", help="the small sweep (8 configurations + producers; "
                   "--hosts 3 adds the virtual hosts)")
    p.add_argument("--medium", action="store_true", help="the small sweep's 14-configuration version")
    p.add_argument("--out", type=Path, help="result directory (default scaling/results/<date>)")
    p.add_argument("--workloads", nargs="+", choices=["resnet", "eke"], default=["resnet"])
    p.add_argument("--modes", nargs="+", choices=["mpmd", "connect", "launcher"], default=["mpmd"])
    p.add_argument("--scaling", nargs="+", choices=["weak", "strong"], default=["weak"])
    p.add_argument("--shards", nargs="+", type=int, default=[1, 2])
    p.add_argument("--clients", nargs="+", type=int, default=[1, 2, 4])
    p.add_argument("--iterations", type=int, default=100, help="per rank (weak); strong: x --strong-total-factor")
    p.add_argument("--resnet-iterations", type=int, default=100)
    p.add_argument("--strong-total-factor", type=int, default=1,
                   help="strong scaling: total iterations = this x --iterations, shared by the ranks")
    p.add_argument("--batch-size", type=int, default=10000, help="the model's batch_size (the paper's 10,000)")
    p.add_argument("--fortran", action="store_true", help="also the Fortran client (MPMD, 1 shard)")
    p.add_argument("--fortran-clients", nargs="+", type=int, default=[1, 2])
    p.add_argument("--hosts", type=int, default=1, help="virtual hosts for the multi-host configurations (>= 3)")
    p.add_argument("--host-shards", nargs="+", type=int, default=[1])
    p.add_argument("--host-clients", nargs="+", type=int, default=[2, 4])
    p.add_argument("--no-hosts", action="store_true", help="--medium without the virtual hosts")
    p.add_argument("--launcher", choices=["mpiexec", "spawn"], default="mpiexec", help="for --modes launcher")
    p.add_argument("--timeout", type=float, default=300, help="seconds per configuration")
    p.add_argument("--server-args", default="", help="options for every mpistage-server, quoted (e.g. '--threads 1')")
    p.add_argument("--no-report", action="store_true", help="records only: no plots, no model")
    p.add_argument("--producers", type=int, help="also the producers/trainer run with this many producers "
                   "(default: 2 with --small, 4 with --medium, else none)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="set in every job's environment, e.g. OMPI_MCA_btl=tcp,self (repeatable)")
    p.add_argument("--launcher-job", help=argparse.SUPPRESS)
    args = p.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    if args.launcher_job:
        launcher_job(args.launcher_job)
        return
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            p.error(f"--env wants KEY=VALUE, not {item!r}")
        os.environ[key] = value  # every job inherits it (the virtual hosts' transport settings win there)
    if args.hosts == 2:
        p.error("--hosts: 1, or 3 and more (servers on one, clients on the others)")
    configs = small_plan(args) if args.small or args.medium else plan(args)
    out = args.out or HERE / "results" / dt.date.today().isoformat()
    summaries = sweep(configs, out, args)
    failed = [s for s in summaries if not s["ok"]]
    print(f"sweep: {len(summaries) - len(failed)} of {len(summaries)} configurations ran; results in {out}")
    producers = args.producers if args.producers is not None else (4 if args.medium else 2 if args.small else 0)
    if producers:
        from producers import run as run_producers
        from producers import table

        print(f"sweep: {producers} producers, one trainer, mpistage and h5py files", flush=True)
        print(table(run_producers(producers, 10.0, 3.0, 256, out / "producers.json", timeout=args.timeout)))
    if not args.no_report and len(failed) < len(summaries):
        from perf_model import report

        print(report(out))  # writes model.json, which the plots use
        try:
            from plots import make_plots

            for path in make_plots(out):
                print(f"plot: {path}")
        except ImportError as exc:
            print(f"sweep: no plots ({exc}; pip install '.[bench]')")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
