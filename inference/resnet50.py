"""ResNet-50 (torchvision-style, random weights) and the paper's image pre-processing script.

The model takes ``(N, 3, 224, 224)`` float32 images normalized with ImageNet
statistics and returns ``(N, 1000)`` logits. :data:`PRE_PROCESS_3CH_SCRIPT` is
TorchScript source for ``pre_process_3ch`` (Partee et al., Listing 1), which
turns ``(H, W, 3)`` / ``(N, H, W, 3)`` images into that input.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

#: ImageNet per-channel mean and std (RGB).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: Name of the entry-point function inside :data:`PRE_PROCESS_3CH_SCRIPT`.
PRE_PROCESS_3CH_FUNCTION: str = "pre_process_3ch"

#: TorchScript source; ``torch.jit.CompilationUnit(PRE_PROCESS_3CH_SCRIPT).pre_process_3ch(img)``.
#: uint8 images are divided by 255; float images with max > 1 are assumed to be 0..255
#: and divided by 255 too; the result is clamped to [0, 1], permuted to NCHW float32 and
#: normalized with the ImageNet mean/std.
PRE_PROCESS_3CH_SCRIPT: str = """
def pre_process_3ch(image: Tensor) -> Tensor:
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if image.dim() != 4 or image.size(3) != 3:
        raise ValueError("pre_process_3ch expects (H, W, 3) or (N, H, W, 3)")
    if image.dtype == torch.uint8:
        x = image.to(torch.float32) / 255.0
    else:
        x = image.to(torch.float32)
        if x.numel() > 0 and bool(x.max() > 1.0):
            x = x / 255.0
    x = torch.clamp(x, 0.0, 1.0)
    x = x.permute(0, 3, 1, 2).contiguous()
    mean = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float32, device=x.device)
    std = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float32, device=x.device)
    return (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
"""


class Bottleneck(nn.Module):
    """torchvision ResNet bottleneck (expansion 4, stride on the 3x3 conv)."""

    expansion: int = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class ResNet50(nn.Module):
    """ResNet-50: stem, Bottleneck stages [3, 4, 6, 3], global pool, linear head."""

    def __init__(self, num_classes: int = 1000, layers: tuple[int, ...] = (3, 4, 6, 3)) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, layers[0], 1)
        self.layer2 = self._make_layer(128, layers[1], 2)
        self.layer3 = self._make_layer(256, layers[2], 2)
        self.layer4 = self._make_layer(512, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * Bottleneck.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample: nn.Module | None = None
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(
                    self.inplanes,
                    planes * Bottleneck.expansion,
                    1,
                    stride=stride,
                    bias=False,
                ),
                nn.BatchNorm2d(planes * Bottleneck.expansion),
            )
        mods = [Bottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * Bottleneck.expansion
        mods += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def resnet50(num_classes: int = 1000, seed: int | None = None) -> ResNet50:
    """A randomly initialised ResNet-50 in eval mode (``seed`` makes it reproducible)."""
    if seed is not None:
        torch.manual_seed(seed)
    return ResNet50(num_classes=num_classes).eval()
