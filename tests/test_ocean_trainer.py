"""The ocean example's online trainer (examples/ocean/trainer.py): the sampler's inverse-density
weights, the schedule, one offline round on synthetic fine states, the assembly of streamed blocks,
and the trainer under real server ranks fed with snapshot keys put as the Fortran model puts them."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from harness import PYTHON, ROOT, run, started_servers

from inference.eke_resnet import inverse_density_weights, lr_factor
from mpistage.jobs import kill_group, mpi_environ

sys.path.insert(0, str(ROOT / "examples"))
from ocean import features, snapshots, training, truth  # noqa: E402

N = 64  # fine cells a side in these tests (the real run has 128)


def synthetic_snapshot(day: int, n: int = N) -> snapshots.Snapshot:
    """A double-gyre-like flow: a basin-scale streamfunction plus small eddies along a meandering jet,
    different each day; h from geostrophy (h = H0 + f0 ψ / g')."""
    rng = np.random.default_rng(day)
    x = (np.arange(n) + 0.5) / n
    xx, yy = np.meshgrid(x, x, indexing="ij")
    psi = 3e4 * np.sin(np.pi * xx) * np.sin(2 * np.pi * yy)
    jet = np.exp(-((yy - 0.5 - 0.1 * np.sin(2 * np.pi * (xx + day / 50))) / 0.12) ** 2) * np.sin(np.pi * xx)
    for _ in range(12):
        k = rng.uniform(4, 16, 2) * rng.choice([-1, 1], 2)
        psi += 4e3 * rng.uniform(0.3, 1) * jet * np.sin(2 * np.pi * (k[0] * xx + k[1] * yy) + rng.uniform(0, 7))
    dx = 1.6e6 / n
    u, v = -np.gradient(psi, dx, axis=1), np.gradient(psi, dx, axis=0)
    return snapshots.Snapshot(day, u, v, 800 + 1e-4 / 0.02 * psi)


def test_sampler_weights_are_inverse_density() -> None:
    y = np.concatenate([np.full(900, -10.0), np.full(100, -5.0)])
    w = inverse_density_weights(y, bins=2).numpy()
    assert w.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(w[y == -5.0] / w[y == -10.0][0], 9.0)  # 9x rarer, 9x the weight
    assert w[y == -10.0].sum() == pytest.approx(w[y == -5.0].sum())  # each bin drawn equally often
    gen = torch.Generator().manual_seed(1)
    draws = np.array(list(torch.utils.data.WeightedRandomSampler(torch.as_tensor(w), 4000, generator=gen)))
    assert 0.45 < (y[draws] == -5.0).mean() < 0.55


def test_schedule_peaks_at_the_fifth_epoch() -> None:
    cfg = training.SHORT_SCHEDULE
    lr = np.array([cfg.lr * lr_factor(e, cfg) for e in range(cfg.epochs)])
    assert int(np.argmax(lr)) == 4 and lr.max() == pytest.approx(4e-3)
    assert (np.diff(lr[:5]) > 0).all() and (np.diff(lr[4:]) < 0).all()
    assert (cfg.weight_decay, cfg.batch_size) == (2e-4, 512)
    assert training.epoch_draws(100_000, 2048) == 2048 and training.epoch_draws(100, 2048) == 100


def test_offline_round_lowers_the_loss_and_scores_held_out_days() -> None:
    days = [5 * (i + 1) for i in range(5)]
    n = 32  # small: 40 samples a day, one step an epoch
    t = training.train_offline([synthetic_snapshot(d, n) for d in days], [4, 8], seed=0)
    assert t.days_heldout == [10] and t.days_train == [5, 15, 20, 25]
    (r,) = t.rounds
    per_day = (n // 4 - 2) ** 2 + (n // 8 - 2) ** 2
    assert (r.samples, r.heldout_samples, r.snapshots) == (4 * per_day, per_day, 5)
    assert r.loss_history[-1] < 0.6 * r.loss_history[0], r.loss_history
    assert r.published and set(r.heldout_rmse_by_factor) == {"4", "8"}
    # the RMSE is that of the published TorchScript on the held-out day
    module = torch.jit.load(io.BytesIO(t.best_model))
    x, y = features.training_samples_centred(*(getattr(synthetic_snapshot(10, n), f) for f in "uvh"), 4, t.basin)
    xs = training.standardized(features.floored(x), t.means, t.stds)
    assert training.rmse(module, xs, np.clip(y, -30, 0)) == pytest.approx(r.heldout_rmse_by_factor["4"], rel=1e-6)
    means = t.means.copy()
    t.train_round(epochs=1)
    np.testing.assert_array_equal(t.means, means)  # statistics fixed after round 1


def test_blocks_assemble_into_the_basin_and_bad_tilings_fail() -> None:
    s = synthetic_snapshot(5)
    blocks = [(snapshots.BlockMeta(i0, j0, N // 2, N // 2, N, N, 5, 4),
               {f: getattr(s, f)[i0:i0 + N // 2, j0:j0 + N // 2] for f in snapshots.FIELDS})
              for j0 in (0, N // 2) for i0 in (0, N // 2)]
    whole = snapshots.assemble(blocks)
    for f in snapshots.FIELDS:
        np.testing.assert_array_equal(getattr(whole, f), getattr(s, f))
    with pytest.raises(ValueError, match="tile"):
        snapshots.assemble(blocks[:3] + blocks[:1])
    with pytest.raises(ValueError, match="4 ranks"):
        snapshots.assemble(blocks[:3])
    with pytest.raises(ValueError, match="block of the grid"):
        snapshots.BlockMeta.from_array(np.array([40, 0, 32, 32, N, N, 5, 4]))


PUT_SNAPSHOTS = """
import sys, time, numpy as np
from mpistage import Client
data, nranks = np.load(sys.argv[1]), 2
c = Client()
for day in (5, 10):
    for r in range(nranks):  # blocks split in x, as MPI_Cart_create makes them; meta last, as the model puts it
        nxl = data["u5"].shape[0] // nranks
        base = "{fine.r%d}.d%06d" % (r, day)
        for f in ("u", "v", "h"):
            c.put_tensor(f"{base}.{f}", np.asfortranarray(data[f"{f}{day}"][r * nxl:(r + 1) * nxl]))
        nx, ny = data["u5"].shape
        c.put_tensor(f"{base}.meta", np.array([r * nxl, 0, nxl, ny, nx, ny, day, nranks], dtype=np.int64))
    time.sleep(1)
"""

CALL_MODEL = """
import sys, numpy as np
from mpistage import Client
c = Client()
c.put_tensor("feat", np.load(sys.argv[1]).astype(np.float32))
c.run_script("eke_preprocess", "preprocess", ["feat", "eke_means", "eke_stds"], ["feat_pre"])
c.run_model("eke_resnet", ["feat_pre"], ["ln_eke"])
np.save(sys.argv[2], c.get_tensor("ln_eke"))
"""


@pytest.mark.skipif(shutil.which("mpiexec") is None, reason="needs mpiexec")
def test_trainer_waits_for_streamed_snapshots_and_publishes(tmp_path: Path) -> None:
    snaps = {d: synthetic_snapshot(d) for d in (5, 10)}
    np.savez(tmp_path / "fields.npz", **{f"{f}{d}": getattr(s, f) for d, s in snaps.items() for f in "uvh"})
    (tmp_path / "put.py").write_text(PUT_SNAPSHOTS)
    (tmp_path / "call.py").write_text(CALL_MODEL)
    out = tmp_path / "out"
    with started_servers(shards=2) as servers:
        env = servers.client_env()
        trainer = subprocess.Popen([PYTHON, str(ROOT / "examples/ocean/trainer.py"), "--nranks", "2",
                                    "--snapshot-interval", "5", "--last-day", "10", "--rounds", "1",
                                    "--epochs", "2", "--timeout", "60", "--out", str(out)],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   env=mpi_environ(env), start_new_session=True)
        try:
            run([PYTHON, tmp_path / "put.py", tmp_path / "fields.npz"], timeout=60, env=env)
            log, _ = trainer.communicate(timeout=120)
        finally:
            kill_group(trainer)
        assert trainer.returncode == 0, log
        x, _ = features.training_samples_centred(snaps[10].u, snaps[10].v, snaps[10].h, 8, features.Basin())
        np.save(tmp_path / "feat.npy", features.floored(x))
        run([PYTHON, tmp_path / "call.py", tmp_path / "feat.npy", tmp_path / "ln_eke.npy"], timeout=60, env=env)
    assert "round 1 day 10 snapshots 2" in log and "published yes" in log, log
    summary = json.loads((out / "training.json").read_text())
    (rec,) = summary["rounds"]
    assert rec["published"] and rec["snapshots"] == 2 and summary["days_heldout"] == [10]
    assert np.isfinite(rec["heldout_rmse_ln_eke"]) and summary["factors"] == [4, 8]
    # the servers run the network the trainer saved, on the servers' preprocessing
    local = torch.jit.load(str(out / "eke_resnet.pt"))
    st = summary["statistics"]
    xs = training.standardized(features.floored(x), np.array(st["means"], np.float32), np.array(st["stds"], np.float32))
    with torch.no_grad():
        expected = local(torch.as_tensor(xs)).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "ln_eke.npy"), expected, rtol=1e-4, atol=1e-4)
    for r in (4, 8):
        want = np.mean([features.coarse_grain_centred(s.u, s.v, s.h, r).eke for s in snaps.values()], axis=0)
        np.testing.assert_allclose(np.load(truth.truth_path(out, r)), want, rtol=1e-12)
