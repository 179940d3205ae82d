"""The ensemble launcher (mpistage.launcher, docs/launcher.md): permutations, run directories and
tags without MPI; then real sweeps with spawn and with the mpiexec fallback (Python and Fortran
members, two shards, a reader, failures, a timeout, stop), Ctrl-C, and no process left behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from harness import ROOT, SCENARIOS, run

from mpistage.cli import mpi_environ
from mpistage.launcher import Ensemble, Model, RunSettings, Status
from mpistage.launcher.generation import configure_text, generate
from mpistage.launcher.permutations import permutations
from mpistage.launcher.settings import parse_walltime
from mpistage.launcher.state import read_state

PY = sys.executable
HAVE_MPI = shutil.which("mpiexec") is not None and shutil.which("ompi-server") is not None
mpi_only = pytest.mark.skipif(not HAVE_MPI, reason="needs Open MPI (mpiexec, ompi-server)")


# ---------------------------------------------------------------- no MPI

def test_status_values_are_smartsims() -> None:
    assert [s.value for s in Status] == ["New", "Running", "Completed", "Failed", "Cancelled", "NeverStarted"]
    assert Status.COMPLETED == "Completed" and Status.FAILED.finished and not Status.RUNNING.finished


def test_permutation_strategies() -> None:
    params = {"a": [1, 2], "b": ["x", "y"]}
    assert permutations(params) == [{"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 2, "b": "x"}, {"a": 2, "b": "y"}]
    assert permutations(params, "step") == [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]
    drawn = permutations(params, "random", n_models=3, seed=1)
    assert len(drawn) == 3 and len({tuple(d.items()) for d in drawn}) == 3
    assert all(d in permutations(params) for d in drawn)
    assert permutations({"a": 5}) == [{"a": 5}]
    assert permutations(params, lambda names, values: [{"a": values[0][-1], "b": "z"}]) == [{"a": 2, "b": "z"}]
    with pytest.raises(ValueError, match="one length"):
        permutations({"a": [1, 2], "b": [1]}, "step")
    with pytest.raises(ValueError, match="unknown perm_strategy"):
        permutations(params, "nope")


def test_ensemble_members_names_and_env() -> None:
    rs = RunSettings("prog", "--x 1")
    rs.set_tasks(3)
    ens = Ensemble("ens", params={"v": [1, 2]}, run_settings=rs, replicas=2, params_as_args=["v"])
    assert [m.name for m in ens] == ["ens_0", "ens_1", "ens_2", "ens_3"]
    assert [m.params["v"] for m in ens] == [1, 1, 2, 2]
    assert ens.models[2].run_settings.command() == ["prog", "--x", "1", "-v", "2"]  # one letter: -v 2
    assert ens.models[0].run_settings.tasks == 3
    assert rs.command() == ["prog", "--x", "1"]  # members got copies
    ens.enable_key_prefixing()
    reader = Model("reader", None, RunSettings("prog"))
    reader.register_incoming_entity(ens)
    assert ens.models[1].key_env() == {"SSKEYOUT": "ens_1"}
    assert reader.key_env() == {"SSKEYIN": "ens_0,ens_1,ens_2,ens_3"}
    assert parse_walltime("01:02:03") == 3723 and parse_walltime("90") == 90
    for bad in ("a/b", "..", ""):
        with pytest.raises(ValueError):
            Model(bad, None, rs)
    with pytest.raises(ValueError, match="run_settings"):
        Ensemble("e", params={"v": [1]})


def test_generate_copies_links_and_configures(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "data").mkdir(parents=True)
    (src / "data" / "f.bin").write_bytes(b"\x00\x01")
    (src / "in.nml").write_text("dt = ;dt;\nname = ';name;'\nkeep = ;other;\n")
    (src / "big.dat").write_text("linked")
    ens = Ensemble("ens", params={"dt": [0.1, 0.2], "name": "run"}, run_settings=RunSettings("prog"))
    ens.attach_generator_files(to_copy=[str(src / "data")], to_symlink=[str(src / "big.dat")],
                               to_configure=[str(src / "in.nml")])
    exp = tmp_path / "exp"
    with pytest.warns(UserWarning, match="other"):
        made = generate(exp, ens)
    assert made == [exp / "ens" / "ens_0", exp / "ens" / "ens_1"]
    m1 = exp / "ens" / "ens_1"
    assert (m1 / "in.nml").read_text() == "dt = 0.2\nname = 'run'\nkeep = ;other;\n"
    assert (m1 / "data" / "f.bin").read_bytes() == b"\x00\x01"
    assert (m1 / "big.dat").is_symlink() and (m1 / "big.dat").read_text() == "linked"
    with pytest.raises(FileExistsError):
        generate(exp, ens)
    with pytest.warns(UserWarning):
        generate(exp, ens, overwrite=True)
    assert configure_text("a;x;b;y;", {"x": 1, "y": "2"}) == "a1b2"


# ---------------------------------------------------------------- real MPI

def leftovers(tag: str) -> list[str]:
    """Processes whose command line names ``tag`` (the experiment's directory)."""
    out = subprocess.run(["pgrep", "-af", tag], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "pgrep" not in line]


def no_leftovers(tag: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while (left := leftovers(tag)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, f"processes left behind: {left}"


@pytest.fixture(scope="module")
def fortran_member(tmp_path_factory: pytest.TempPathFactory) -> str | None:
    if shutil.which("mpif90") is None:
        return None
    build = tmp_path_factory.mktemp("fmember")
    run(["make", "-C", str(ROOT / "fortran")], timeout=300)
    flags = run([PY, "-m", "mpistage.fortran_config", "--fflags", "--flibs"]).stdout.split()
    exe = build / "launcher_member"
    run(["mpif90", "-O1", "-ffree-line-length-none", str(SCENARIOS / "launcher_member.f90"), *flags,
         f"-J{build}", "-o", str(exe)], timeout=120)
    return str(exe)


def sweep(launcher: str, tmp_path: Path, fortran: str | None) -> dict:
    exp = tmp_path / f"exp-{launcher}"
    cmd = [PY, str(SCENARIOS / "launcher_sweep.py"), "--launcher", launcher, "--exp-path", str(exp)]
    out = run([*cmd, *(["--fortran", fortran] if fortran else [])], timeout=150).stdout
    lines = [ln for ln in out.splitlines() if ln.startswith("REPORT ")]
    assert lines, out
    report = json.loads(lines[-1][len("REPORT "):])
    state = read_state(exp)
    assert {m["name"]: m["status"] for m in state["members"]} == report["status"]
    cli = run([PY, "-m", "mpistage.cli", "experiment", "status", str(exp)]).stdout
    assert "py_0" in cli and "Completed" in cli and "timeout after 4 s" in cli, cli
    no_leftovers(str(exp))
    return report


def check_sweep(report: dict, fortran: bool) -> None:
    status = report["status"]
    writers = ["py_0", "py_1", "py_2", *(["ft_0", "ft_1"] if fortran else [])]
    assert all(status[w] == "Completed" for w in writers), status
    assert status["reader"] == "Completed", (status, report["reader_out"])
    assert f"reader: {len(writers)} sources ok" in report["reader_out"]
    assert status["bad"] == "Failed" and "exit status 3" in report["bad_error"]
    assert status["abort"] == "Failed"  # MPI_Abort: this member only; the rest went on
    assert status["hang"] == "Failed" and report["hang_reason"] == "timeout after 4 s"
    assert status["stopme"] == "Cancelled"
    assert report["finished"] is True and report["db_after_close"] == "Cancelled"
    assert "killed" not in report["db_stop"]["reason"], report["db_stop"]  # stopped within the bound
    assert report["configured"] == "value is 1.5 and ;unknown; stays\n"
    assert "member py_0 of 2 ranks wrote 1.5" in report["outputs"]["py_0"]
    assert sorted(report["callbacks"]) == sorted([*writers, "bad", "abort", "hang", "stopme"])
    assert "reader" in report["summary"] and "Cancelled" in report["summary"]


@mpi_only
@pytest.mark.timeout(170)
def test_spawn_sweep(tmp_path: Path, fortran_member: str | None) -> None:
    report = sweep("spawn", tmp_path, fortran_member)
    assert report["launcher"] == "spawn" and report["db_stop"]["returncode"] == 0, report["db_stop"]
    check_sweep(report, fortran_member is not None)


@mpi_only
@pytest.mark.timeout(170)
def test_mpiexec_fallback_sweep(tmp_path: Path, fortran_member: str | None) -> None:
    report = sweep("mpiexec", tmp_path, fortran_member)
    assert report["launcher"] == "mpiexec"
    check_sweep(report, fortran_member is not None)


@mpi_only
@pytest.mark.timeout(120)
@pytest.mark.parametrize(("launcher", "sig"), [("spawn", signal.SIGINT), ("mpiexec", signal.SIGTERM)])
def test_interrupt_leaves_nothing(tmp_path: Path, launcher: str, sig: int) -> None:
    exp = tmp_path / f"exp-{launcher}"
    proc = subprocess.Popen([PY, str(SCENARIOS / "launcher_interrupt.py"), launcher, str(exp)], env=mpi_environ(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                members = read_state(exp)["members"]
            except (FileNotFoundError, ValueError):
                members = []
            if len(members) == 2 and all(m["status"] == "Running" for m in members):
                break
            assert proc.poll() is None, proc.communicate()[0]
            time.sleep(0.3)
        else:
            raise AssertionError("the members did not start")
        assert len(leftovers(str(exp))) >= 3  # ompi-server, servers, members
        os.kill(proc.pid, sig)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0, out
    no_leftovers(str(exp))
    state = read_state(exp)
    assert [m["status"] for m in state["members"]] == ["Cancelled", "Cancelled"], out


@mpi_only
@pytest.mark.timeout(150)
def test_spawned_database_stops_cleanly(tmp_path: Path) -> None:
    """The experiment spawns the server ranks too; exp.stop(db) ends them through their parent
    intercommunicator: every rank exits 0, well inside the SIGKILL bound, nothing left running."""
    exp = tmp_path / "exp-spawndb"
    out = run([PY, str(SCENARIOS / "launcher_spawned_db.py"), str(exp)], timeout=130).stdout
    lines = [ln for ln in out.splitlines() if ln.startswith("REPORT ")]
    assert lines, out
    report = json.loads(lines[-1][len("REPORT "):])
    assert report["db_launcher"] == "spawn" and report["shards_seen"] == 2, report
    assert report["status"] == {"w_0": "Completed", "w_1": "Completed", "reader": "Completed"}, report
    assert "reader: 2 sources ok" in report["reader_out"]
    assert report["db_status"] == "Cancelled" and report["db_returncode"] == 0 and not report["db_reason"], report
    assert not report["servers_alive_after_stop"] and report["stop_s"] < 8.0, report
    db = Path(report["db_dir"])
    assert [(db / ".mpistage" / "orchestrator" / f"status.{r}").read_text().strip() for r in (0, 1)] == ["0", "0"]
    err = (db / "orchestrator.err").read_text()
    assert err.count("the driver that spawned it said stop") == 2, err
    no_leftovers(str(exp))
