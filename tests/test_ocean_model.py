"""The ocean model of examples/ocean: conservation, decomposition, stability, restarts, features.

Each run is the real Fortran model under mpiexec, bounded by a timeout (tests/harness.py kills the
process group when it runs over); the fields are read back from its files with numpy.
"""

from __future__ import annotations

import math
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from harness import ROOT, run

sys.path.insert(0, str(ROOT / "examples"))
from ocean import configs, features, state  # noqa: E402
from ocean.build import build  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("mpif90") is None or shutil.which("mpiexec") is None,
                                reason="needs mpif90 and mpiexec (Open MPI + gfortran)")
TIMEOUT = 240


@pytest.fixture(scope="module")
def ocean_exe() -> Path:
    return build()


def run_ocean(exe: Path, workdir: Path, nml: dict[str, dict[str, Any]], ranks: int = 1,
              check: bool = True) -> str:
    """Write ``nml`` to workdir/run.nml and run the model on ``ranks`` ranks there; returns its output."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = state.write_namelist(workdir / "run.nml", nml)
    return run(["mpiexec", "-n", str(ranks), exe, path], timeout=TIMEOUT, cwd=workdir, check=check).stdout


def read_diag(path: Path) -> np.ndarray:
    """Rows of the diagnostics file: day, ke, hmin, hmax, umax, mass, kappa_mean, e_mean."""
    return np.loadtxt(path, comments="#", ndmin=2)


def small_basin(nx: int, ny: int, days: int, scheme: str = "meke", **run_vars: Any) -> dict[str, dict[str, Any]]:
    """The double gyre on an nx x ny grid, nu4 and dt scaled from the fine run, h perturbed at the start."""
    dx_ratio = 1.6e6 / min(nx, ny) / 12.5e3
    nml = configs.merged(configs.FINE, grid={"nx": nx, "ny": ny},
                         physics={"nu4": configs.FINE_NU4 * dx_ratio**4},
                         run={"dt": 2880.0, "days": days, "perturb": 5.0, "seed": 3, **run_vars})
    nml["closure"] = {"scheme": scheme, **{k: v for k, v in configs.COARSE[4].items() if k.startswith("meke_")}}
    return nml


def test_mass_conserved(ocean_exe: Path, tmp_path: Path) -> None:
    # one rank: a decomposed run equals this one to round-off (test_decomposition_gives_same_fields), and
    # a single rank does not wait on halo exchanges with descheduled neighbours on an oversubscribed machine
    nml = small_basin(48, 48, 20, output_interval=20, output_prefix="snap", diag_file="diag.txt")
    run_ocean(ocean_exe, tmp_path, nml, ranks=1)
    start, end = state.read_state(tmp_path / "snap_d000000.bin"), state.read_state(tmp_path / "snap_d000020.bin")
    assert end.day == 20
    assert np.abs(end.h - start.h).max() > 1.0, "h hardly changed: the test would prove nothing"
    assert end.kappa.max() > 0, "thickness diffusion (MEKE kappa) was off"
    m0, m1 = math.fsum(start.h.ravel()), math.fsum(end.h.ravel())
    assert abs(m1 - m0) / m0 < 1e-13, (m0, m1)
    mass = read_diag(tmp_path / "diag.txt")[:, 5]
    assert np.ptp(mass) / mass[0] < 1e-13


@pytest.mark.parametrize("ranks,px,py", [(4, 2, 2), (3, 3, 1)])
def test_decomposition_gives_same_fields(ocean_exe: Path, tmp_path: Path, ranks: int, px: int, py: int) -> None:
    # 41 x 37 cells: blocks of unequal size in both directions
    nml = small_basin(41, 37, 6, restart_out="end.bin", features_file="features.bin")
    run_ocean(ocean_exe, tmp_path / "one", nml, ranks=1)
    run_ocean(ocean_exe, tmp_path / "many", configs.merged(nml, grid={"px": px, "py": py}), ranks=ranks)
    a, b = state.read_state(tmp_path / "one/end.bin"), state.read_state(tmp_path / "many/end.bin")
    assert np.abs(a.u).max() > 1e-3, "no flow developed"
    for name in ("u", "v", "h", "e", "kappa"):
        x, y = getattr(a, name), getattr(b, name)
        assert np.isfinite(x).all()
        scale = max(np.abs(x).max(), 1e-30)
        assert np.abs(x - y).max() <= 1e-12 * scale, f"{name} differs by {np.abs(x - y).max()} (scale {scale})"
    fa = state.read_features(tmp_path / "one/features.bin")[1]
    fb = state.read_features(tmp_path / "many/features.bin")[1]
    np.testing.assert_allclose(fb, fa, rtol=1e-10, atol=1e-30)


def test_fine_run_stays_finite_and_bounded(ocean_exe: Path, tmp_path: Path) -> None:
    """40 days of the 12.5 km double gyre from rest (3200 steps) on 1 rank (see test_mass_conserved)."""
    run_ocean(ocean_exe, tmp_path, configs.merged(configs.FINE, run={"days": 40, "diag_file": "diag.txt",
                                                                     "restart_out": "end.bin"}))
    d = read_diag(tmp_path / "diag.txt")
    assert d.shape == (40, 8) and np.isfinite(d).all()
    ke, hmin, hmax, umax = d[:, 1], d[:, 2], d[:, 3], d[:, 4]
    assert ke[-1] > ke[0] > 0, "the wind did not spin the gyres up"
    assert ke.max() < 0.05 and umax.max() < 2.0
    assert hmin.min() > 400 and hmax.max() < 1200
    end = state.read_state(tmp_path / "end.bin")
    assert end.day == 40 and np.isfinite(end.u).all() and np.isfinite(end.h).all()
    assert np.all(end.u[0] == 0) and np.all(end.u[-1] == 0) and np.all(end.v[:, 0] == 0) and np.all(end.v[:, -1] == 0)


@pytest.mark.parametrize("factor", [4, 8])
def test_meke_closure_stable(ocean_exe: Path, tmp_path: Path, factor: int) -> None:
    """Two model years of the coarse basin with the MEKE-like closure and its per-resolution constants."""
    nml = configs.merged(configs.coarse(factor, "meke"),
                         run={"days": 730, "perturb": 1.0, "diag_file": "diag.txt", "restart_out": "end.bin"})
    run_ocean(ocean_exe, tmp_path, nml)
    d = read_diag(tmp_path / "diag.txt")
    assert d.shape == (730, 8) and np.isfinite(d).all()
    assert d[:, 1].max() < 0.05 and d[:, 2].min() > 400
    end = state.read_state(tmp_path / "end.bin")
    assert np.isfinite(end.e).all() and end.e.min() >= 1e-8 and end.e.max() < 1.0
    assert end.e.max() > 1e-5, "the sub-grid energy collapsed to its floor everywhere"
    alpha = configs.COARSE[factor]["meke_alpha"]
    np.testing.assert_allclose(end.kappa, alpha * np.sqrt(end.e) * 1.6e6 / (configs.FINE_CELLS // factor), rtol=1e-12)


def test_restart_continues_exactly(ocean_exe: Path, tmp_path: Path) -> None:
    base = small_basin(32, 32, 4, restart_out="straight.bin")
    run_ocean(ocean_exe, tmp_path, base, ranks=2)
    run_ocean(ocean_exe, tmp_path, configs.merged(base, run={"days": 2, "restart_out": "half.bin"}), ranks=2)
    run_ocean(ocean_exe, tmp_path, configs.merged(base, run={"days": 2, "restart_in": "half.bin",
                                                             "restart_out": "resumed.bin"}), ranks=2)
    a, b = state.read_state(tmp_path / "straight.bin"), state.read_state(tmp_path / "resumed.bin")
    assert a.day == b.day == 4
    for name in ("u", "v", "h", "e", "kappa"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_bad_namelist_is_refused(ocean_exe: Path, tmp_path: Path) -> None:
    out = run_ocean(ocean_exe, tmp_path, configs.merged(configs.FINE, closure={"scheme": "gm"}), check=False)
    assert "scheme must be none, meke or ml" in out
    out = run_ocean(ocean_exe, tmp_path, configs.merged(configs.FINE, run={"dt": 1000.0}), check=False)
    assert "whole number of steps" in out


def block_reference(a: np.ndarray, r: int) -> np.ndarray:
    """Block means by explicit loops over the blocks."""
    nx, ny = a.shape[0] // r, a.shape[1] // r
    out = np.empty((nx, ny))
    for i in range(nx):
        for j in range(ny):
            out[i, j] = a[i * r:(i + 1) * r, j * r:(j + 1) * r].mean()
    return out


def features_reference(uc: np.ndarray, vc: np.ndarray, h: np.ndarray, basin: features.Basin) -> np.ndarray:
    """The four features cell by cell, with the wall neighbour replaced by the cell itself."""
    nx, ny = h.shape
    dx, dy = basin.lx / nx, basin.ly / ny
    out = np.empty((nx, ny, 4))
    for i in range(nx):
        for j in range(ny):
            e, w, n, s = min(i + 1, nx - 1), max(i - 1, 0), min(j + 1, ny - 1), max(j - 1, 0)
            f = basin.f0 + basin.beta * ((j + 0.5) * dy - basin.ly / 2)
            out[i, j] = [0.5 * (uc[i, j] ** 2 + vc[i, j] ** 2),
                         (vc[e, j] - vc[w, j]) / (2 * dx) - (uc[i, n] - uc[i, s]) / (2 * dy),
                         math.hypot((h[e, j] - h[w, j]) / (2 * dx), (h[i, n] - h[i, s]) / (2 * dy)),
                         math.sqrt(basin.gprime * h[i, j]) / abs(f) / math.sqrt(dx * dy)]
    return out


@pytest.fixture(scope="module")
def flow_state(ocean_exe: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[state.OceanState, Path]:
    """A 64 x 48 basin after 15 days of wind on 4 ranks, with the model's own features of that state."""
    d = tmp_path_factory.mktemp("flow")
    nml = configs.merged(small_basin(64, 48, 15, "none", restart_out="end.bin", features_file="features.bin"),
                         physics={"tau0": 0.2})
    run_ocean(ocean_exe, d, nml, ranks=4)
    return state.read_state(d / "end.bin"), d / "features.bin"


def test_model_features_match_numpy(flow_state: tuple[state.OceanState, Path]) -> None:
    s, path = flow_state
    day, model = state.read_features(path)
    assert day == s.day == 15
    basin = features.Basin()
    uc, vc = features.cell_centred(s.u, s.v)
    expected = features.features(uc, vc, s.h, basin)
    assert np.isfinite(model).all() and np.abs(model[..., 1]).max() > 1e-8, "no vorticity to compare"
    np.testing.assert_allclose(model, expected, rtol=1e-10, atol=1e-300)
    np.testing.assert_allclose(expected, features_reference(uc, vc, s.h, basin), rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("r", [4, 8])
def test_coarse_graining_matches_block_loops(flow_state: tuple[state.OceanState, Path], r: int) -> None:
    s, _ = flow_state
    uc, vc = features.cell_centred(s.u, s.v)
    c = features.coarse_grain(s.u, s.v, s.h, r)
    assert c.h.shape == (64 // r, 48 // r)
    for got, field in ((c.u, uc), (c.v, vc), (c.h, s.h)):
        np.testing.assert_allclose(got, block_reference(field, r), rtol=1e-13, atol=1e-15)
    eke = np.empty_like(c.eke)
    for i in range(eke.shape[0]):
        for j in range(eke.shape[1]):
            bu, bv = uc[i * r:(i + 1) * r, j * r:(j + 1) * r], vc[i * r:(i + 1) * r, j * r:(j + 1) * r]
            eke[i, j] = 0.5 * (bu.var() + bv.var())
    np.testing.assert_allclose(c.eke, eke, rtol=1e-8, atol=1e-14)
    assert c.eke.max() > 1e-8
    x, y = features.training_samples(s.u, s.v, s.h, r, features.Basin())
    n = (64 // r - 2) * (48 // r - 2)
    assert x.shape == (n, 4) and y.shape == (n,)
    np.testing.assert_allclose(y, np.log(np.maximum(eke[1:-1, 1:-1], features.EKE_FLOOR)).ravel(), rtol=1e-8)
    np.testing.assert_allclose(x, features_reference(c.u, c.v, c.h, features.Basin())[1:-1, 1:-1].reshape(-1, 4),
                               rtol=1e-10, atol=1e-300)


def test_coarse_graining_refuses_bad_shapes() -> None:
    with pytest.raises(ValueError, match="does not divide"):
        features.block_mean(np.zeros((10, 8)), 4)
    with pytest.raises(ValueError, match="face velocities"):
        features.cell_centred(np.zeros((5, 4)), np.zeros((5, 4)))


READ_SNAPSHOT = """
import sys, numpy as np
from mpistage import Client
c = Client()
out = {}
for r in range(int(sys.argv[2])):
    base = "{ocean.r%d}.d%06d" % (r, int(sys.argv[3]))
    for name in ("u", "v", "h", "meta"):
        out[f"{r}.{name}"] = c.get_tensor(f"{base}.{name}")
np.savez(sys.argv[1], **out)
"""


def test_ml_closure_against_servers(ocean_exe: Path, tmp_path: Path) -> None:
    """Four model days of the factor-4 basin with closure = ml on 2 ranks against 2 shards (connect
    mode), an untrained EKEResNet published by setup_network.py, from a restart at day 30; snapshots
    streamed every 2 days (the last on day 34, the final state)."""
    from harness import PYTHON, started_servers

    run_ocean(ocean_exe, tmp_path, configs.merged(configs.coarse(4, "none"),
                                                  run={"days": 30, "perturb": 1.0, "restart_out": "warm.bin"}))
    nml = configs.merged(configs.coarse(4, "ml"),
                         run={"days": 4, "restart_in": "warm.bin", "restart_out": "end.bin", "diag_file": "diag.txt"},
                         closure={"ml_alpha": 0.02, "coupling_interval": 1},
                         coupling={"stream": True, "snapshot_interval": 2})
    state.write_namelist(tmp_path / "ml.nml", nml)
    with started_servers(shards=2) as servers:
        env = {**servers.client_env(), "PYTHONPATH": str(ROOT)}
        run([PYTHON, ROOT / "examples/ocean/setup_network.py", "--state", tmp_path / "warm.bin", "--factor", "1"],
            timeout=TIMEOUT, env=env)
        out = run([PYTHON, "-m", "mpistage.cli", "run", "--dir", servers.dir, "-n", "2", "--", ocean_exe, "ml.nml"],
                  timeout=TIMEOUT, cwd=tmp_path).stdout
        (tmp_path / "snap.py").write_text(READ_SNAPSHOT)
        run([PYTHON, tmp_path / "snap.py", tmp_path / "snap.npz", "2", "34"], timeout=TIMEOUT, env=env)
    assert "4 network calls" in out, out
    d = read_diag(tmp_path / "diag.txt")
    assert d.shape == (4, 8) and np.isfinite(d).all() and d[:, 2].min() > 400
    end = state.read_state(tmp_path / "end.bin")
    assert end.day == 34
    assert np.isfinite(end.e).all() and (end.e > 0).all() and end.e.max() <= 1.0, "no EKE came back"
    assert np.ptp(np.log(end.e)) > 1e-3, "the network's EKE is the same everywhere"
    np.testing.assert_allclose(end.kappa, 0.02 * np.sqrt(end.e) * 1.6e6 / 32, rtol=1e-12)
    cost = [line for line in (tmp_path / "diag.txt").read_text().splitlines() if line.startswith("# mpistage_s")]
    assert cost and float(cost[0].split()[2]) > 0
    snap = np.load(tmp_path / "snap.npz")
    uc, vc = features.cell_centred(end.u, end.v)
    for r in range(2):
        i0, j0, nxl, nyl, nx, ny, day, nranks = (int(x) for x in snap[f"{r}.meta"])
        assert (nx, ny, day, nranks) == (32, 32, 34, 2)
        block = np.s_[i0:i0 + nxl, j0:j0 + nyl]
        np.testing.assert_array_equal(snap[f"{r}.h"], end.h[block])
        np.testing.assert_allclose(snap[f"{r}.u"], uc[block], rtol=1e-15, atol=1e-18)
        np.testing.assert_allclose(snap[f"{r}.v"], vc[block], rtol=1e-15, atol=1e-18)
