"""The ocean example coupled end to end (examples/ocean/run.py) and the restriction of fine states.

The end-to-end test is the real thing at tiny settings: 2 server ranks, the 12.5 km fine run from the
shipped restart streaming 3 snapshots, one training round of the trainer, one ML and one MEKE member
at each of factor 4 and 8 for 10 days, the report. Bounded by a timeout (process group killed).
"""

from __future__ import annotations

import gzip
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from harness import PYTHON, ROOT, run

sys.path.insert(0, str(ROOT / "examples"))
from ocean import features, restrict, state  # noqa: E402

RUN = ROOT / "examples" / "ocean" / "run.py"
TIMEOUT = 240


def random_state(nx: int, ny: int, seed: int = 0) -> state.OceanState:
    rng = np.random.default_rng(seed)
    u, v = rng.normal(size=(nx + 1, ny)), rng.normal(size=(nx, ny + 1))
    u[0], u[-1], v[:, 0], v[:, -1] = 0, 0, 0, 0
    return state.OceanState(12.0, u, v, 800 + rng.normal(size=(nx, ny)), rng.random((nx, ny)), rng.random((nx, ny)))


@pytest.mark.parametrize("r", [2, 4, 8])
def test_restriction_matches_face_and_block_loops(r: int) -> None:
    s = random_state(32, 16)
    c = restrict.restrict(s, r, e0=1e-3)
    cx, cy = 32 // r, 16 // r
    assert c.u.shape == (cx + 1, cy) and c.v.shape == (cx, cy + 1) and c.h.shape == (cx, cy)
    for i in range(cx + 1):
        for j in range(cy):
            assert c.u[i, j] == pytest.approx(s.u[i * r, j * r:(j + 1) * r].mean(), rel=1e-12, abs=1e-15)
    for i in range(cx):
        for j in range(cy + 1):
            assert c.v[i, j] == pytest.approx(s.v[i * r:(i + 1) * r, j * r].mean(), rel=1e-12, abs=1e-15)
    np.testing.assert_allclose(c.h, features.block_mean(s.h, r), rtol=1e-14)
    # mass and the volume flux through every coarse face are those of the fine grid
    assert c.h.sum() * r * r == pytest.approx(s.h.sum(), rel=1e-14)
    np.testing.assert_allclose(c.u.sum(axis=1) * r, s.u[::r].sum(axis=1), rtol=1e-12, atol=1e-12)
    assert np.all(c.u[0] == 0) and np.all(c.u[-1] == 0) and np.all(c.v[:, 0] == 0) and np.all(c.v[:, -1] == 0)
    assert np.all(c.e == 1e-3) and np.all(c.kappa == 0) and c.day == s.day


def test_restricted_state_file_round_trip(tmp_path: Path) -> None:
    c = restrict.restrict(random_state(16, 16, seed=1), 4)
    back = state.read_state(restrict.write_state(tmp_path / "start.bin", c))
    assert back.day == c.day
    for name in ("u", "v", "h", "e", "kappa"):
        np.testing.assert_array_equal(getattr(back, name), getattr(c, name))


def test_restriction_refuses_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not divide"):
        restrict.restrict(random_state(12, 12), 5)
    bad = random_state(8, 8)
    bad.h[0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        restrict.write_state(tmp_path / "x.bin", bad)


@pytest.mark.skipif(shutil.which("mpif90") is None or shutil.which("mpiexec") is None,
                    reason="needs mpif90 and mpiexec (Open MPI + gfortran)")
def test_coupled_run_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = run([PYTHON, RUN, "--out", out, "--fine-days", "6", "--snapshot-interval", "2", "--min-snapshots", "3",
                "--rounds", "1", "--epochs", "2", "--epoch-samples", "512", "--members-f4", "1", "--members-f8", "1",
                "--member-days", "10", "--member-output-interval", "2", "--member-timeout", "200"],
               timeout=TIMEOUT, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "phase 1: fine day" in proc.stdout and "ml_0: Completed" in proc.stdout
    # the trainer saw the 3 streamed snapshots, trained one round and published it
    training = json.loads((out / "trainer" / "training.json").read_text())
    assert len(training["rounds"]) == 1 and training["rounds"][0]["published"]
    assert np.isfinite(training["rounds"][0]["heldout_rmse_ln_eke"])
    assert np.load(out / "trainer" / "truth_f4.npy").shape == (32, 32)
    # members started from the fine state of day 6, restricted to their grid
    fine6 = state.read_state(out / "fine" / "state_d000006.bin")
    for name, r in (("ml_0", 4), ("ml_1", 8)):
        start = state.read_state(out / "ml" / name / "start.bin")
        np.testing.assert_array_equal(start.h, restrict.restrict(fine6, r).h)
        diag = (out / "ml" / name / "diag.txt").read_text()
        assert "network_calls 10" in diag, diag[-400:]
        last = state.read_state(out / "ml" / name / "snap_d000016.bin")
        assert np.isfinite(last.e).all() and (last.e > 0).all() and np.ptp(np.log(last.e)) > 1e-3
        np.testing.assert_allclose(last.kappa, {4: 0.02, 8: 0.05}[r] * np.sqrt(last.e) * 1.6e6 / (128 // r),
                                   rtol=1e-12)
    report = json.loads((out / "report.json").read_text())
    assert report["all_stable"], report["stability"]
    for key in ("ml_f4", "meke_f4", "ml_f8", "meke_f8"):
        assert report["scores"][key]["scored"] == 1 and np.isfinite(report["scores"][key]["rmse_eke"])
    assert report["cost"]["network_calls"] == 20 and report["cost"]["mpistage_s"] > 0
    assert report["comparison"]["4"]["eke_change_percent"] is not None
    md = (out / "report.md").read_text()
    assert "## EKE against the coarse-grained truth" in md and "| 4 | ml | 1/1 |" in md
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    for png in ("fig6_eke_maps.png", "fig7_zonal_means.png", "fig8_h_ensemble.png", "training.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png


def test_shipped_restart_is_a_spun_up_fine_state(tmp_path: Path) -> None:
    path = tmp_path / "fine_year5.bin"
    path.write_bytes(gzip.decompress((ROOT / "examples/ocean/restarts/fine_year5.bin.gz").read_bytes()))
    s = state.read_state(path)
    assert s.shape == (128, 128) and s.day == 0
    uc, vc = features.cell_centred(s.u, s.v)
    ke = 0.5 * (uc**2 + vc**2).mean()
    assert 0.01 < ke < 0.05, f"KE {ke}: not the eddying state of year 5"



def test_members_start_from_different_fine_states() -> None:
    from ocean import run as driver

    interval, starts = driver.start_days(driver.DEMO)
    assert interval == 91 and starts == {4: [91, 182, 273, 364], 8: [182, 364]}
    assert all(d % interval == 0 and 0 < d <= driver.DEMO.fine_days for d in starts[4] + starts[8])
    with pytest.raises(ValueError, match="at least one member"):
        driver.Plan(10, 5, 2, 0, 0, 10, 5).check()


def test_report_refuses_a_directory_without_a_run(tmp_path: Path) -> None:
    from ocean import report

    with pytest.raises(SystemExit, match="no ensemble.json"):
        report.main([str(tmp_path)])
