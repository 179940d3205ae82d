"""The Fortran client (fortran/, docs/fortran.md) against Python server ranks.

Fortran test programs under mpiexec, in MPMD and in connect mode; values put from Fortran are
checked with numpy in Python (fortran/tests/checker.py) and the other way round. Every mpiexec
runs in its own process group under a timeout and is killed whole when it runs over.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mpistage.jobs import JobTimeout, run_bounded, server_command
from mpistage.mpienv import apply_defaults
from mpistage.protocol import DTYPE_CODES

ROOT = Path(__file__).resolve().parent.parent
FORTRAN = ROOT / "fortran"
BUILD = FORTRAN / "build"
PY = sys.executable
BIN = Path(PY).parent
SERVER = server_command()
MPISTAGE = [str(BIN / "mpistage")] if (BIN / "mpistage").exists() else [PY, "-m", "mpistage.cli"]
TIMEOUT = 120

pytestmark = pytest.mark.skipif(shutil.which("mpif90") is None or shutil.which("mpiexec") is None,
                                reason="needs mpif90 and mpiexec (Open MPI + gfortran)")


def env() -> dict[str, str]:
    e = apply_defaults(dict(os.environ))
    # A stray address must not matter: MPMD programs ignore it, `mpistage run` sets the real one.
    e["MPISTAGE_ADDRESS"] = "/nonexistent/stray-address"
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT), e.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return e


def run(cmd: list[str], cwd: Path | None = None, timeout: float = TIMEOUT,
        check: bool = True, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run cmd in its own process group (killed on timeout); fail the test on timeout or error."""
    try:
        result = run_bounded(cmd, timeout, {**env(), **(extra_env or {})}, cwd)
    except JobTimeout as exc:
        pytest.fail(str(exc)[-4000:])
    if check and result.returncode != 0:
        pytest.fail(f"exit {result.returncode}: {' '.join(cmd)}\n{result.stdout[-6000:]}")
    return result


@pytest.fixture(scope="module")
def built() -> Path:
    run(["make", "-C", str(FORTRAN), "tests"], timeout=300)
    return BUILD / "tests"


@pytest.fixture(scope="module")
def engine_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A TorchScript script (add_scale, row_sum) and a model (x @ W, W[j, k] = j + 10 k)."""
    import torch

    d = tmp_path_factory.mktemp("engine")
    script = d / "script.py"
    script.write_text("def add_scale(x, y):\n    return x * 2.0 + y\n\n"
                      "def row_sum(x):\n    return x.sum(dim=1)\n")

    class MatW(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("w", torch.tensor([[j + 10 * k for k in range(2)] for j in range(4)],
                                                   dtype=torch.float32))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x @ self.w

    model = d / "model.pt"
    torch.jit.save(torch.jit.script(MatW()), str(model))
    return script, model


def vector_lines() -> list[str]:
    """docs/protocol_vectors.json as fortran/tests/vectors.f90's input lines (hex bytes, '-' empty)."""
    vectors = json.loads((ROOT / "docs" / "protocol_vectors.json").read_text())

    def hx(text: str) -> str:
        return text.replace(" ", "") or "-"

    lines = []
    for v in vectors["routing"]:
        shards = " ".join(f"{n} {s}" for n, s in v["shard_of"].items())
        lines.append(f"route {v['key'].encode().hex()} {v['crc16'] or '-'} {v['slot']} {len(v['shard_of'])} {shards}")
    for v in vectors["messages"]:
        kind = {"MPSQ": "request", "MPSR": "reply"}[v["magic"]]
        fields = " ".join(hx(f) for f in v["fields"])
        lines.append(f"{kind} {v['code']} {v['seq']} {v['flags']} {v['payload_bytes']} {len(v['fields'])} "
                     f"{fields} {hx(v['hex'])}")
    for v in vectors["descriptors"]:
        code = DTYPE_CODES[np.dtype(v["dtype"])]
        dims = " ".join(str(d) for d in v["shape"])
        lines.append(f"desc {code} {v['order']} {len(v['shape'])} {dims} {hx(v['hex'])}")
    return lines


def test_protocol_vectors(built: Path) -> None:
    """docs/protocol_vectors.json in Fortran: routing (CRC16, slot, shard), request messages packed
    with mpistage_wire, replies parsed, descriptors packed and parsed (no MPI, no servers)."""
    lines = vector_lines()
    proc = subprocess.run([str(built / "vectors")], input="\n".join(lines) + "\n", capture_output=True,
                          text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"vectors: {len(lines)} checked, 0 failures" in proc.stdout, proc.stdout


def test_mpmd_roundtrip(built: Path, tmp_path: Path) -> None:
    """One MPMD world: 2 shards, 2 Fortran ranks, 1 Python checker rank. Every type and rank
    both ways, datasets, lists, errors, copy/rename. The Fortran program never calls
    MPI_Init/MPI_Finalize; the job ends by itself once every client rank said goodbye."""
    out = run(["mpiexec", "-n", "2", *SERVER, ":", "-n", "2", str(built / "roundtrip"), "mpmd", ":",
               "-n", "1", PY, str(FORTRAN / "tests" / "checker.py"), "mpmd", "2"], cwd=tmp_path).stdout
    assert "PY mpmd: 50 Fortran tensors and datasets checked" in out, out
    for r in (0, 1):
        assert f"F{r} mpmd: 181 checks, 0 failures" in out, out
    assert "FAIL" not in out
    # missing keys give a non-zero status and a message naming the key
    assert "error as expected: unpack_tensor of a missing key: tensor 'no_such_key' does not exist" in out


def test_connect_roundtrip(built: Path, tmp_path: Path) -> None:
    """Separately started servers (mpistage start): a Fortran job puts, a Python job checks and
    puts, a second Fortran job reads everything back."""
    run_dir = tmp_path / "run"
    try:
        run([*MPISTAGE, "start", "--shards", "2", "--dir", str(run_dir)], timeout=90)
        out = run([*MPISTAGE, "run", "--dir", str(run_dir), "-n", "2", "--", str(built / "roundtrip"), "put"],
                  cwd=tmp_path).stdout
        assert "F0 put: 36 checks, 0 failures" in out and "F1 put: 36 checks, 0 failures" in out, out
        out = run([*MPISTAGE, "run", "--dir", str(run_dir), "-n", "1", "--", PY,
                   str(FORTRAN / "tests" / "checker.py"), "connect", "2"], cwd=tmp_path).stdout
        assert "PY connect: 50 Fortran tensors and datasets checked" in out, out
        out = run([*MPISTAGE, "run", "--dir", str(run_dir), "-n", "2", "--", str(built / "roundtrip"), "get"],
                  cwd=tmp_path).stdout
        assert "F0 get: 194 checks, 0 failures" in out and "F1 get: 194 checks, 0 failures" in out, out
        assert "FAIL" not in out
    finally:
        run([*MPISTAGE, "stop", "--dir", str(run_dir)], timeout=60, check=False)


def test_connect_without_mpiexec(built: Path, tmp_path: Path) -> None:
    """The Fortran program started on its own (a singleton, as SmartRedis programs may be run)
    connects to separately started servers: put, a Python check, then get."""
    run_dir = tmp_path / "run"
    alone = {"MPISTAGE_ADDRESS": str(run_dir / "address")}
    try:
        run([*MPISTAGE, "start", "--shards", "2", "--dir", str(run_dir)], timeout=90)
        out = run([str(built / "roundtrip"), "put"], cwd=tmp_path, extra_env=alone).stdout
        assert "F0 put: 36 checks, 0 failures" in out, out
        out = run([PY, str(FORTRAN / "tests" / "checker.py"), "connect", "1"], cwd=tmp_path,
                  extra_env=alone).stdout
        assert "PY connect: 25 Fortran tensors and datasets checked" in out, out
        out = run([str(built / "roundtrip"), "get"], cwd=tmp_path, extra_env=alone).stdout
        assert "F0 get: 194 checks, 0 failures" in out and "FAIL" not in out, out
    finally:
        run([*MPISTAGE, "stop", "--dir", str(run_dir)], timeout=60, check=False)


def test_engine_from_fortran(built: Path, engine_files: tuple[Path, Path], tmp_path: Path) -> None:
    """set_script_from_file / set_model_from_file / run_script / run_model(_async) from Fortran,
    checked against Fortran's own arithmetic (matmul, sum(dim=2)). set_model is all or nothing:
    bytes that are not TorchScript give an error and leave the name on no shard (a run on an
    input of each of the 2 shards fails), and the same name then takes a real model on both."""
    script, model = engine_files
    out = run(["mpiexec", "-n", "2", *SERVER, ":", "-n", "2", str(built / "engine"), str(script), str(model)],
              cwd=tmp_path).stdout
    for r in (0, 1):
        assert f"E{r} engine: 0 failures" in out, out
    assert "ok: model output == matmul(x, W)" in out and "ok: row_sum values" in out
    assert "ok: set_model of bytes that are not TorchScript: " in out and "ok: no model after a failed" in out, out
    assert out.count("ok: the refused model is on no shard: ") == 2, out
    assert out.count("ok: set_model output on shard of ") == 2, out


def test_mpistage_config_and_example(built: Path, tmp_path: Path) -> None:
    """examples/fortran_hello built with mpistage-config's flags, run in MPMD with 4 blocks."""
    config = f"{PY} -m mpistage.fortran_config"
    flags = run([PY, "-m", "mpistage.fortran_config", "--fflags", "--flibs"]).stdout
    assert f"-I{BUILD / 'include'}" in flags and "-lmpistage_f" in flags
    exe = tmp_path / "hello"
    run(["make", "-C", str(ROOT / "examples" / "fortran_hello"), f"MPISTAGE_CONFIG={config}", f"BIN={exe}"])
    out = run(["mpiexec", "-n", "1", *SERVER, ":", "-n", "4", str(exe),
               str(ROOT / "examples" / "fortran_hello" / "smooth.py")], cwd=tmp_path).stdout
    assert "fortran_hello: 4 blocks (2 x 2) smoothed on the servers" in out, out
