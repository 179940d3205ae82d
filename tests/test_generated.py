"""The checked-in generated Fortran files (fortran/src/generated/, fortran/tests/generated/) are
what fortran/tools/generate.py writes from mpistage's Python modules today (fast, no MPI)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORTRAN = ROOT / "fortran"
GENERATED_DIRS = ("src/generated", "tests/generated")


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fortran")
    subprocess.run([sys.executable, str(FORTRAN / "tools" / "generate.py"), "--out", str(out)], check=True,
                   capture_output=True, timeout=120)
    return out


def files(base: Path) -> set[str]:
    return {str(p.relative_to(base)) for d in GENERATED_DIRS if (base / d).is_dir()
            for p in (base / d).iterdir() if p.is_file()}


def test_generated_files_match(regenerated: Path) -> None:
    fresh = files(regenerated)
    assert fresh, "the generator wrote nothing"
    assert files(FORTRAN) == fresh, "generated folders hold other files than the generator writes"
    drifted = [rel for rel in sorted(fresh) if (FORTRAN / rel).read_text() != (regenerated / rel).read_text()]
    assert not drifted, f"out of date, run `make -C fortran generate`: {drifted}"


def test_no_hand_copied_constants(regenerated: Path) -> None:
    """No hand-written Fortran source defines a parameter that the generator defines."""
    text = (regenerated / "src" / "generated" / "wire_constants.inc").read_text()
    names = set(re.findall(r"\b([A-Z][A-Z0-9_]+) = ", text))
    assert {"OP_SET_MODEL", "ST_NOT_FOUND", "KIND_MODEL", "DT_UINT16", "WIDEN_TAG", "PURPOSE_CLIENT"} <= names
    for src in sorted((FORTRAN / "src").glob("*.f90")):
        for line in src.read_text().splitlines():
            if "parameter" in line:
                again = names & set(re.findall(r"\b([A-Z][A-Z0-9_]+)\s*=", line))
                assert not again, f"{src.name} defines {again} by hand: {line.strip()}"


def test_open_mpi_defaults_follow_mpienv(regenerated: Path) -> None:
    """Every Open MPI default (root ones under the euid test) and every mpiexec marker is in the
    generated Fortran, so the two clients cannot diverge again."""
    from mpistage import mpienv

    text = (regenerated / "src" / "generated" / "open_mpi_env.inc").read_text()
    root_part = text[text.index("c_geteuid() == 0"):text.index("end if")]
    for name, value in mpienv.OPEN_MPI_DEFAULTS.items():
        assert f"'{name}' // c_null_char, '{value}' // c_null_char, 0_c_int" in text
        assert name not in root_part
    for name, value in mpienv.ROOT_DEFAULTS.items():
        assert f"'{name}' // c_null_char, '{value}' // c_null_char, 0_c_int" in root_part
    for name in mpienv.MPIEXEC_ENV_MARKERS:
        assert f"call get_environment_variable('{name}', status=st)" in text
