"""A SmartRedis Fortran program (fortran/tests/smartredis_program.F90: only smartredis_* modules
and enum_fortran.inc) built with ``mpistage-config --fflags/--flibs`` as a user would, run
under mpiexec against Python servers in MPMD and in connect mode (SSDB naming the connection
file, as SmartSim sets it; there it also reads a Python client's uint32/uint64 metadata)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from harness import ROOT, run, started_servers

from mpistage.jobs import server_command

PROGRAM = ROOT / "fortran" / "tests" / "smartredis_program.F90"


class PlusOne(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 1.0


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    """The program (built against fortran/build) and a TorchScript model file."""
    out = tmp_path_factory.mktemp("smartredis_fortran")
    run(["make", "-C", str(ROOT / "fortran")], 600)
    config = [sys.executable, "-m", "mpistage.fortran_config"]
    fflags = run([*config, "--fflags"], 60).stdout.split()
    flibs = run([*config, "--flibs"], 60).stdout.split()
    exe = out / "smartredis_program"
    run(["mpif90", "-ffree-line-length-none", *fflags, str(PROGRAM), *flibs, "-o", str(exe)], 300)
    model = out / "plus1.pt"
    torch.jit.save(torch.jit.script(PlusOne()), str(model))
    return exe, model


def check_output(stdout: str, log: Path) -> None:
    assert "SMARTREDIS FORTRAN OK 0" in stdout and "SMARTREDIS FORTRAN OK 1" in stdout, stdout
    assert "FAILED" not in stdout, stdout
    lines = log.read_text().splitlines()
    assert sum("from the log context" in line for line in lines) == 2, lines
    assert not any("not written at INFO" in line for line in lines), lines


def test_smartredis_fortran_program_mpmd(built, tmp_path):
    exe, model = built
    log = tmp_path / "sr.log"
    result = run(["mpiexec", "-n", "1", *server_command(), ":", "-n", "2", str(exe), str(model)], 180,
                 {"SR_LOG_FILE": str(log)})
    check_output(result.stdout, log)


#: A Python client's dataset with SmartRedis's unsigned metadata, for the Fortran program to read.
PUT_UINT_METADATA = ("import numpy as np\nfrom mpistage.smartredis import Client, Dataset\n"
                     "ds = Dataset('py_typed')\nds.add_meta_scalar('count', np.uint32(7))\n"
                     "ds.add_meta_scalar('big', np.uint64(2**64 - 1))\nClient(None).put_dataset(ds)\n")


def test_smartredis_fortran_program_connect_with_ssdb(built, tmp_path):
    """Connect mode as under SmartSim: a plain mpiexec with SSDB naming the connection file."""
    exe, model = built
    log = tmp_path / "sr.log"
    with started_servers(shards=1) as servers:
        run([sys.executable, "-c", PUT_UINT_METADATA], 120, {"SSDB": str(servers.address)})
        uri = servers.dir / "ompi-server.uri"
        result = run(["mpiexec", "--ompi-server", f"file:{uri}", "-x", "SSDB", "-x", "SR_LOG_FILE", "-n", "2",
                      str(exe), str(model)], 180, {"SSDB": str(servers.address), "SR_LOG_FILE": str(log)})
    check_output(result.stdout, log)
    assert result.stdout.count("UINT METADATA CHECKED") == 2, result.stdout
