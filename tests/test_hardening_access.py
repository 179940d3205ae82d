"""Connect-mode access (issue 14, points 2 and 4; docs/security.md): the deployment secret, refused
hellos (wrong or missing secret, a client asking to stop the servers), clients SIGKILLed at each
phase of connect, a job that exits without goodbye, and the loopback-only Open MPI defaults. Each
time the servers go on and a later job connects and works."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import sys
import time
from pathlib import Path

import pytest
from harness import ROOT, run, script, started_servers

from mpistage import mpienv
from mpistage._mpi.bootstrap import signals_deferred

SETUP_TIMEOUT = 4  # seconds (mpistage-server --setup-timeout): past it a half-set-up job is abandoned
#: A later job: a small (inline) and a 1 MiB (one-sided) tensor per rank, read back.
CHECK_JOB = """
import os
import numpy as np
from mpistage import Client, app_comm
c = Client()
rank = app_comm().Get_rank()
for n in (5, 1 << 17):
    a = np.arange(n, dtype=np.float64) + rank
    c.put_tensor(f"check.{os.getpid()}.{n}", a)
    assert np.array_equal(c.get_tensor(f"check.{os.getpid()}.{n}"), a)
print("CHECK OK", rank, flush=True)
"""


@pytest.fixture(scope="module")
def fortran_client(tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    """tests/scenarios/fortran_secret.f90 built against the Fortran client (None without mpif90)."""
    if shutil.which("mpif90") is None:
        return None
    build = tmp_path_factory.mktemp("fsecret")
    run(["make", "-C", str(ROOT / "fortran")], timeout=300)
    flags = run([sys.executable, "-m", "mpistage.fortran_config", "--fflags", "--flibs"]).stdout.split()
    exe = build / "fortran_secret"
    run(["mpif90", "-O1", "-ffree-line-length-none", script("fortran_secret.f90"), *flags, f"-J{build}",
         "-o", str(exe)], timeout=120)
    return exe


def fault(servers, *args: str) -> str:
    """Run the raw connect_faults.py client against ``servers`` (it may kill itself); its output."""
    return run([sys.executable, script("connect_faults.py"), str(servers.address), *args], 90, check=False).stdout


def test_secret_refusals_kills_mid_connect_and_later_jobs_work(tmp_path, fortran_client):
    with started_servers(shards=2, server_args=["--setup-timeout", str(SETUP_TIMEOUT)]) as servers:
        assert stat.S_IMODE(servers.address.stat().st_mode) == 0o600
        secret = json.loads(servers.address.read_text())["secret"]
        assert len(secret) == 64 and int(secret, 16) >= 0

        # Refused before any session setup, with the reason; the servers go on.
        assert "VERDICT 1 wrong or missing secret" in fault(servers, "done", "--secret", "bad")
        out = fault(servers, "done", "--purpose", "stop")
        assert "VERDICT 1 a stop hello: the servers stop only through mpistage stop" in out, out

        # The Python client reports a refusal as ServerUnreachableError.
        wrong = tmp_path / "wrong-secret"
        wrong.write_text(json.dumps({**json.loads(servers.address.read_text()), "secret": ""}))  # missing
        code = (f"import mpistage\ntry:\n    mpistage.Client(address={str(wrong)!r})\n"
                "except mpistage.ServerUnreachableError as e:\n    print('REFUSED', e)\n")
        assert "REFUSED the servers refused this job: wrong or missing secret" in run(
            [sys.executable, "-c", code], 90).stdout

        if fortran_client is not None:  # the Fortran client presents the secret too
            out = run([str(fortran_client), "refused"], 90, {"MPISTAGE_ADDRESS": str(wrong)}).stdout
            assert "FORTRAN REFUSED the servers refused this job: wrong or missing secret" in out, out
            assert "FORTRAN OK" in run([str(fortran_client)], 90, servers.client_env()).stdout

        # SIGKILL at each phase of connect: no hello, hello but no verdict read, then inside setup.
        for phase in ("before-hello", "after-hello", "after-verdict", "after-merge2"):
            assert f"DYING {phase}" in fault(servers, phase)
        # A job that completes setup and vanishes without goodbye.
        assert "SESSION OK" in fault(servers, "done")

        job = tmp_path / "check_job.py"
        job.write_text(CHECK_JOB)
        assert "CHECK OK 0" in servers.run_singleton(job, timeout=120).stdout
        out = servers.run_client(job, clients=2, timeout=150).stdout
        assert "CHECK OK 0" in out and "CHECK OK 1" in out, out
        log = servers.server_log()
        refusals = 3 if fortran_client is not None else 2
        assert log.count("refused a connecting job: wrong or missing secret") == refusals, log
        assert "refused a connecting job: a stop hello" in log
        assert "refused a connecting job: no hello within" in log  # before-hello
        assert log.count("session setup was abandoned") == 2 * 3, log  # both shards; killed after hello, in setup
        assert secret not in log


def test_open_mpi_tcp_defaults_are_loopback_unless_told():
    env = mpienv.apply_defaults({})
    assert env["OMPI_MCA_btl_tcp_if_include"] == env["OMPI_MCA_oob_tcp_if_include"] == "lo"
    assert env["UCX_NET_DEVICES"] == "lo" and env["OMPI_MCA_btl_tcp_disable_family"] == "6"
    env = mpienv.apply_defaults({"MPISTAGE_INTERFACES": "eth0,ib0"})
    assert env["OMPI_MCA_btl_tcp_if_include"] == env["OMPI_MCA_oob_tcp_if_include"] == "eth0,ib0"
    assert "UCX_NET_DEVICES" not in env
    env = mpienv.apply_defaults({"MPISTAGE_INTERFACES": "all"})
    assert not any(name in env for name in mpienv.LOOPBACK_DEFAULTS)
    env = mpienv.apply_defaults({"OMPI_MCA_btl_tcp_if_include": "10.0.0.0/8"})  # the user's own wins
    assert env["OMPI_MCA_btl_tcp_if_include"] == "10.0.0.0/8"


def test_signals_during_session_setup_take_effect_after_it():
    got: list[int] = []
    before = signal.signal(signal.SIGTERM, lambda signum, _frame: got.append(signum))
    try:
        with signals_deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            assert got == []
        assert got == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, before)
