"""Online training of EKEResNet from fine-run snapshots: samples, held-out split, recipe, rounds.

Each snapshot gives, at every factor r (4 and 8 pooled), the four raw features and the target
ln EKE of its interior coarse cells (:func:`ocean.features.training_samples_centred`). Snapshots
are split by arrival: the 2nd of every ``heldout_every`` (5) seen is held out, never trained on.

A round (:meth:`OnlineTrainer.train_round`) follows the paper's recipe on a short schedule
(:data:`SHORT_SCHEDULE`): SGD (momentum 0.9), lr 4e-3 with a step-wise warm-up that peaks at the 5th
epoch and a step decay after it, MSE loss, L2 penalty (weight decay) 2e-4, batches of 512, and
each epoch draws ``epoch_samples`` (2048) training samples (all of them when there are fewer) with
probabilities proportional to the inverse density of ln EKE (``inference.eke_resnet.train_eke_resnet``).
The paper draws one tenth of its data set per epoch; ours holds 10^3 to 10^5 samples, where one
tenth would be less than a batch to a few dozen: a fixed number of draws keeps a round's cost the
same at any data size (40 steps of 512 by default, about 5 s on a free core).
The first round starts from an EKEResNet whose output bias is the mean training ln EKE (about −8;
from 0, SGD at lr 4e-3 overshoots and the ReLUs die); later rounds continue from the previous
round's network.

Standardization: the feature means and stds are fitted on the first round's training samples and
then stay fixed, so a running member's preprocessing never changes under it; every later network
is trained on inputs standardized with those same statistics.

The held-out RMSE of ln EKE is that of the fused TorchScript network a member would call, on at
most :data:`HELDOUT_EVAL_MAX` held-out samples (a seeded random subset when there are more). A
round whose RMSE beats every earlier round's is marked for publishing; so is the first round.
"""

from __future__ import annotations

import dataclasses
import io
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from inference.eke_features import preprocess_reference
from inference.eke_resnet import EKEResNet, EKETrainingConfig, fuse_batchnorm, train_eke_resnet
from ocean import features
from ocean.setup_network import statistics
from ocean.snapshots import Snapshot

#: the short default schedule: 10 epochs, lr 4e-3 peaking at the 5th, then x0.7 every epoch
SHORT_SCHEDULE = EKETrainingConfig(epochs=10, peak_epoch=5, decay_every=1, decay_gamma=0.7)
#: samples drawn per epoch (see the module docstring)
EPOCH_SAMPLES = 2048
HELDOUT_EVERY = 5
#: most held-out samples the RMSE is computed on
HELDOUT_EVAL_MAX = 16384
#: targets are clipped to the range the model clips the network's ln EKE to (src/ocean_coupling.f90)
LN_EKE_MIN, LN_EKE_MAX = -30.0, 0.0


@dataclass
class Samples:
    """Raw features (N, 4) floored as the model floors them, ln EKE (N,), and each sample's factor (N,)."""

    x: np.ndarray
    y: np.ndarray
    factor: np.ndarray

    @classmethod
    def concat(cls, parts: Sequence[Samples]) -> Samples:
        """All samples of ``parts`` in one (empty arrays for no parts)."""
        if not parts:
            return cls(np.zeros((0, features.NUM_FEATURES)), np.zeros(0), np.zeros(0, dtype=np.int64))
        return cls(np.concatenate([p.x for p in parts]), np.concatenate([p.y for p in parts]),
                   np.concatenate([p.factor for p in parts]))

    def __len__(self) -> int:
        return len(self.y)


def snapshot_samples(snap: Snapshot, factors: Iterable[int], basin: features.Basin) -> Samples:
    """The pooled samples of one snapshot at ``factors``. Raises ValueError if a factor does not divide the grid."""
    parts = []
    for r in factors:
        x, y = features.training_samples_centred(snap.u, snap.v, snap.h, r, basin)
        parts.append(Samples(features.floored(x), np.clip(y, LN_EKE_MIN, LN_EKE_MAX),
                             np.full(len(y), r, dtype=np.int64)))
    return Samples.concat(parts)


def is_heldout(index: int, every: int = HELDOUT_EVERY) -> bool:
    """Whether the ``index``-th snapshot seen (0-based) is held out: the 2nd of every ``every``."""
    return every > 1 and index % every == 1


def epoch_draws(n: int, cap: int) -> int:
    """Samples drawn per epoch from ``n`` training samples: ``cap``, or all ``n`` when fewer (at least 2)."""
    return max(2, min(n, cap))


def standardized(x_raw: np.ndarray, means: np.ndarray, stds: np.ndarray) -> np.ndarray:
    """Network input (N, 4) float32: the preprocessing the servers run, on float32 raw features as sent."""
    return preprocess_reference(np.asarray(x_raw, dtype=np.float32), means, stds)


def quadratic_features(x: np.ndarray) -> np.ndarray:
    """[1, x_i, x_i x_j (i <= j)] of standardized features (N, 4) -> (N, 15)."""
    n, k = x.shape
    cols = [np.ones(n), *(x[:, i] for i in range(k))]
    cols += [x[:, i] * x[:, j] for i in range(k) for j in range(i, k)]
    return np.stack(cols, axis=1).astype(np.float64)


def quadratic_rmse(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray) -> float:
    """Held-out RMSE of a least-squares quadratic regression of ln EKE on standardized features (the
    reference OCEAN-NOTES.md quotes: the network should beat it)."""
    coef, *_ = np.linalg.lstsq(quadratic_features(x_train), y_train, rcond=None)
    return float(np.sqrt(np.mean((quadratic_features(x_test) @ coef - y_test) ** 2)))


def torchscript(model: EKEResNet) -> torch.jit.ScriptModule:
    """The network as published: BatchNorm folded, TorchScript."""
    return torch.jit.script(fuse_batchnorm(model))


def script_bytes(module: torch.jit.ScriptModule) -> bytes:
    """``torch.jit.save`` of ``module`` to bytes (what ``set_model`` takes)."""
    buf = io.BytesIO()
    torch.jit.save(module, buf)
    return buf.getvalue()


def rmse(module: Any, x: np.ndarray, y: np.ndarray) -> float:
    """RMSE of ``module``'s ln EKE on standardized ``x`` against ``y``."""
    with torch.no_grad():
        pred = module(torch.as_tensor(x, dtype=torch.float32)).numpy().reshape(-1)
    return float(np.sqrt(np.mean((pred.astype(np.float64) - y) ** 2)))


@dataclass
class RoundResult:
    """One round: what it trained on, its losses, whether it is to be published, how long it took (wall
    and CPU seconds of this process: on a shared machine the wall time says more about the load)."""

    round: int
    snapshots: int
    samples: int
    train_loss: float
    heldout_rmse_ln_eke: float | None
    heldout_rmse_quadratic_baseline: float | None
    heldout_rmse_by_factor: dict[str, float]
    heldout_samples: int
    published: bool
    seconds: float
    cpu_seconds: float
    loss_history: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The record written to training.json."""
        return dataclasses.asdict(self)


class OnlineTrainer:
    """EKEResNet trained in rounds on the snapshots added so far (see the module docstring).

    ``factors`` are pooled; ``config`` is the recipe (epochs, lr, schedule...), ``epoch_samples`` the
    cap on samples drawn per epoch, ``seed`` seeds the initial weights and each round's sampling.
    """

    def __init__(self, factors: Sequence[int], config: EKETrainingConfig = SHORT_SCHEDULE,
                 epoch_samples: int = EPOCH_SAMPLES, heldout_every: int = HELDOUT_EVERY, seed: int = 0,
                 basin: features.Basin | None = None) -> None:
        if not factors:
            raise ValueError("at least one coarse-graining factor is needed")
        if epoch_samples < 2:
            raise ValueError(f"epoch_samples must be at least 2, got {epoch_samples}")
        self.factors = [int(r) for r in factors]
        self.config, self.epoch_samples, self.heldout_every, self.seed = config, epoch_samples, heldout_every, seed
        self.basin = basin or features.Basin()
        self.train: list[Samples] = []
        self.heldout: list[Samples] = []
        self.days_train: list[int] = []
        self.days_heldout: list[int] = []
        self.means: np.ndarray | None = None
        self.stds: np.ndarray | None = None
        torch.manual_seed(seed)
        self.model = EKEResNet()
        self.rounds: list[RoundResult] = []
        self.best_rmse: float | None = None
        self.best_model: bytes | None = None

    @property
    def snapshots(self) -> int:
        """How many snapshots were added."""
        return len(self.days_train) + len(self.days_heldout)

    def add(self, snap: Snapshot) -> None:
        """Add a snapshot's samples to the training or the held-out set (by arrival, :func:`is_heldout`)."""
        s = snapshot_samples(snap, self.factors, self.basin)
        if is_heldout(self.snapshots, self.heldout_every):
            self.heldout.append(s)
            self.days_heldout.append(snap.day)
        else:
            self.train.append(s)
            self.days_train.append(snap.day)

    def train_round(self, epochs: int | None = None) -> RoundResult:
        """Train one round on every training snapshot so far; evaluate on the held-out ones.

        Sets :attr:`best_model` (TorchScript bytes) when the round is to be published. Raises
        ValueError when there is no training sample yet.
        """
        start, cpu = time.monotonic(), time.process_time()
        train = Samples.concat(self.train)
        if len(train) < 2:
            raise ValueError("no training samples yet: add snapshots first")
        if self.means is None:
            self.means, self.stds = statistics(train.x)
            with torch.no_grad():  # start from the mean: the targets sit near -8, far from an untrained output
                self.model.fc2.bias.fill_(float(train.y.mean()))
        x = standardized(train.x, self.means, self.stds)
        n = len(self.rounds) + 1
        cfg = dataclasses.replace(self.config, sample_fraction=epoch_draws(len(train), self.epoch_samples) / len(train))
        self.model, history = train_eke_resnet(x, train.y, epochs=epochs, config=cfg, model=self.model,
                                               seed=self.seed + n)
        module = torchscript(self.model)
        held = self._heldout_subset()
        rmse_nn = rmse_quad = None
        by_factor: dict[str, float] = {}
        if len(held):
            xh = standardized(held.x, self.means, self.stds)
            rmse_nn = rmse(module, xh, held.y)
            rmse_quad = quadratic_rmse(x, train.y, xh, held.y)
            for r in self.factors:
                sel = held.factor == r
                if sel.any():
                    by_factor[str(r)] = rmse(module, xh[sel], held.y[sel])
        improved = self.best_model is None or (rmse_nn is not None and
                                               (self.best_rmse is None or rmse_nn < self.best_rmse))
        if improved:
            self.best_rmse, self.best_model = rmse_nn, script_bytes(module)
        result = RoundResult(round=n, snapshots=self.snapshots, samples=len(train), train_loss=history[-1],
                             heldout_rmse_ln_eke=rmse_nn, heldout_rmse_quadratic_baseline=rmse_quad,
                             heldout_rmse_by_factor=by_factor, heldout_samples=len(held), published=improved,
                             seconds=time.monotonic() - start, cpu_seconds=time.process_time() - cpu,
                             loss_history=history)
        self.rounds.append(result)
        return result

    def _heldout_subset(self) -> Samples:
        held = Samples.concat(self.heldout)
        if len(held) <= HELDOUT_EVAL_MAX:
            return held
        pick = np.sort(np.random.default_rng(self.seed).choice(len(held), HELDOUT_EVAL_MAX, replace=False))
        return Samples(held.x[pick], held.y[pick], held.factor[pick])


def train_offline(snapshots: Iterable[Snapshot], factors: Sequence[int], rounds: int = 1,
                  **trainer_args: Any) -> OnlineTrainer:
    """Train ``rounds`` rounds without MPI on ``snapshots`` (e.g. ``Snapshot.from_state`` of state files).

    ``trainer_args`` go to :class:`OnlineTrainer`. Returns the trainer (``.rounds``, ``.best_model``).
    """
    trainer = OnlineTrainer(factors, **trainer_args)
    for snap in snapshots:
        trainer.add(snap)
    for _ in range(rounds):
        trainer.train_round()
    return trainer
