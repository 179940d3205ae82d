"""EKEResNet (Partee et al., section 4.3) and its training recipe.

The network maps ``(N, 4)`` preprocessed features to ``(N, 1)`` ln(EKE):
transposed convolutions lift each point (seen as ``(N, 4, 1, 1)``) to a 7x7
map, three bottleneck residual blocks with grouped 3x3 convolutions follow,
then the map is flattened into two fully connected layers.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

# Training hyper-parameters stated in the paper.
EKE_LEARNING_RATE: float = 4e-3
EKE_PEAK_EPOCH: int = 5
EKE_EPOCHS: int = 100
EKE_WEIGHT_DECAY: float = 2e-4
EKE_BATCH_SIZE: int = 512
EKE_SAMPLE_FRACTION: float = 0.1


@dataclass(frozen=True)
class EKETrainingConfig:
    """Training recipe; defaults follow the paper where it states a value.

    ``momentum``, ``decay_every``, ``decay_gamma`` and ``density_bins`` are not
    given in the paper and are our choices.
    """

    lr: float = EKE_LEARNING_RATE
    peak_epoch: int = EKE_PEAK_EPOCH
    epochs: int = EKE_EPOCHS
    weight_decay: float = EKE_WEIGHT_DECAY
    batch_size: int = EKE_BATCH_SIZE
    sample_fraction: float = EKE_SAMPLE_FRACTION
    momentum: float = 0.9
    decay_every: int = 20
    decay_gamma: float = 0.5
    density_bins: int = 64


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 grouped, 1x1 expand (BatchNorm + ReLU), identity skip."""

    def __init__(self, channels: int, width: int, groups: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + x)


class EKEResNet(nn.Module):
    """(N, 4) features -> (N, 1) ln(EKE); scriptable and traceable.

    Lift: ConvTranspose2d k4 (1x1 -> 4x4), BN, ReLU, ConvTranspose2d k4 (4x4 -> 7x7),
    BN, ReLU; then ``num_blocks`` :class:`Bottleneck` blocks, flatten, fc1, ReLU, fc2.
    """

    def __init__(
        self,
        in_features: int = 4,
        channels: int = 16,
        width: int = 16,
        groups: int = 4,
        num_blocks: int = 3,
        hidden: int = 32,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.lift1 = nn.ConvTranspose2d(in_features, channels // 2, 4, bias=False)
        self.lift_bn1 = nn.BatchNorm2d(channels // 2)
        self.lift2 = nn.ConvTranspose2d(channels // 2, channels, 4, bias=False)
        self.lift_bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.blocks = nn.Sequential(*[Bottleneck(channels, width, groups) for _ in range(num_blocks)])
        self.fc1 = nn.Linear(channels * 7 * 7, hidden)
        self.fc2 = nn.Linear(hidden, 1)

    def forward(self, x: Tensor) -> Tensor:
        # lift1 on a 1x1 input is exactly a matmul with its weight (in, out*4*4);
        # evaluating it that way avoids the slow CPU transposed-convolution kernel.
        w = self.lift1.weight
        x = torch.mm(x, w.flatten(1)).reshape(-1, w.size(1), w.size(2), w.size(3))
        b = self.lift1.bias
        if b is not None:
            x = x + b.reshape(1, -1, 1, 1)
        x = self.relu(self.lift_bn1(x))
        # channels_last spares oneDNN reorders of tiny-channel maps (several x on CPU).
        x = x.contiguous(memory_format=torch.channels_last)
        x = self.relu(self.lift_bn2(self.lift2(x)))
        x = self.blocks(x.contiguous(memory_format=torch.channels_last))
        x = torch.flatten(x, 1)
        x = self.relu(self.fc1(x))
        return self.fc2(x)


def fuse_batchnorm(model: EKEResNet) -> EKEResNet:
    """Eval-mode copy of ``model`` with every BatchNorm folded into the preceding conv.

    Same outputs up to float rounding, fewer memory passes: used for export.
    """
    m = copy.deepcopy(model).eval()
    m.lift1 = fuse_conv_bn_eval(m.lift1, m.lift_bn1, transpose=True)
    m.lift2 = fuse_conv_bn_eval(m.lift2, m.lift_bn2, transpose=True)
    m.lift_bn1, m.lift_bn2 = nn.Identity(), nn.Identity()
    for block in m.blocks:
        for conv, bn in (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")):
            setattr(block, conv, fuse_conv_bn_eval(getattr(block, conv), getattr(block, bn)))
            setattr(block, bn, nn.Identity())
    return m


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (trainable or not) of ``module``."""
    return sum(p.numel() for p in module.parameters())


def lr_factor(epoch: int, cfg: EKETrainingConfig) -> float:
    """Step-wise multiplier of ``cfg.lr`` for 0-based ``epoch``.

    Linear warm-up in epoch steps reaching 1.0 at epoch ``peak_epoch`` (1-based),
    then multiplied by ``decay_gamma`` every ``decay_every`` epochs.
    """
    peak = max(1, cfg.peak_epoch)
    if epoch < peak:
        return (epoch + 1) / peak
    return cfg.decay_gamma ** ((epoch - peak + 1) // max(1, cfg.decay_every))


def inverse_density_weights(target: np.ndarray | Tensor, bins: int = 64) -> Tensor:
    """Per-sample weights proportional to 1 / (histogram density of ``target``)."""
    t = torch.as_tensor(np.asarray(target, dtype=np.float64).reshape(-1))
    counts, edges = np.histogram(t.numpy(), bins=bins)
    idx = np.clip(np.searchsorted(edges, t.numpy(), side="right") - 1, 0, bins - 1)
    width = float(edges[1] - edges[0]) or 1.0
    density = counts[idx] / (len(t) * width)
    weights = 1.0 / density
    return torch.as_tensor(weights / weights.sum(), dtype=torch.float64)


def train_eke_resnet(
    features: np.ndarray | Tensor,
    target: np.ndarray | Tensor,
    epochs: int | None = None,
    config: EKETrainingConfig | None = None,
    model: EKEResNet | None = None,
    seed: int = 0,
) -> tuple[EKEResNet, list[float]]:
    """Train EKEResNet on preprocessed ``features`` (N, 4) and ln(EKE) ``target``.

    SGD with weight decay, warm-up/step-decay schedule (:func:`lr_factor`), MSE
    loss, and a WeightedRandomSampler with inverse-density weights drawing
    ``sample_fraction * N`` samples per epoch. Returns the model in eval mode
    and the mean training loss of each epoch.
    """
    cfg = config or EKETrainingConfig()
    n_epochs = cfg.epochs if epochs is None else epochs
    gen = torch.Generator().manual_seed(seed)
    x = torch.as_tensor(np.asarray(features), dtype=torch.float32)
    y = torch.as_tensor(np.asarray(target), dtype=torch.float32).reshape(-1, 1)
    if x.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"features {tuple(x.shape)} and target {tuple(y.shape)} mismatch")
    if model is None:
        torch.manual_seed(seed)
        model = EKEResNet(in_features=x.shape[1])
    opt = torch.optim.SGD(
        model.parameters(),
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: lr_factor(e, cfg))
    n_draw = max(2, math.ceil(len(x) * cfg.sample_fraction))
    sampler = torch.utils.data.WeightedRandomSampler(
        inverse_density_weights(y, cfg.density_bins),
        n_draw,
        replacement=True,
        generator=gen,
    )
    loss_fn = nn.MSELoss()
    history: list[float] = []
    model.train()
    for _ in range(n_epochs):
        order = torch.tensor(list(sampler), dtype=torch.long)
        total, seen = 0.0, 0
        for batch in torch.split(order, cfg.batch_size):
            if len(batch) < 2:  # BatchNorm needs more than one sample
                continue
            opt.zero_grad()
            loss = loss_fn(model(x[batch]), y[batch])
            loss.backward()
            opt.step()
            total += loss.item() * len(batch)
            seen += len(batch)
        sched.step()
        history.append(total / max(1, seen))
    model.eval()
    return model, history
