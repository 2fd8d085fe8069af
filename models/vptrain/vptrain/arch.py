"""A configurable MobileNetV2 (width, resolution, depth, head width, strides) plus the in-graph preprocessing.

torchvision's MobileNetV2 fixes the last 1x1 conv at 1280 channels and a stride-2 stem meant for 224x224 RGB;
variant families need every one of those knobs, and 1-channel, 28x28 inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

# MobileNetV2 inverted-residual stages: (expansion t, output channels c at width 1.0).
STAGES: tuple[tuple[int, int], ...] = ((1, 16), (6, 24), (6, 32), (6, 64), (6, 96), (6, 160), (6, 320))
DEFAULT_DEPTH: tuple[int, ...] = (1, 2, 3, 4, 3, 3, 1)
STEM_CHANNELS = 32


def make_divisible(value: float, divisor: int = 8) -> int:
    """Rounds channel counts as the MobileNetV2 reference does (multiple of 8, never below 90% of the value)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


@dataclass(frozen=True)
class ArchSpec:
    """Everything that defines one network of a family."""

    name: str
    width: float = 1.0
    resolution: int = 28
    depth: tuple[int, ...] = DEFAULT_DEPTH
    head_channels: int = 1280
    stem_stride: int = 1
    strides: tuple[int, ...] = (1, 1, 2, 2, 1, 2, 1)
    dropout: float = 0.2
    extra: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.depth) != len(STAGES):
            raise ValueError(f"{self.name}: depth needs {len(STAGES)} entries, got {list(self.depth)}")
        if len(self.strides) != len(STAGES):
            raise ValueError(f"{self.name}: strides needs {len(STAGES)} entries, got {list(self.strides)}")
        if any(d < 1 for d in self.depth):
            raise ValueError(f"{self.name}: every stage needs at least one block, got {list(self.depth)}")
        if self.width <= 0 or self.resolution < 1 or self.head_channels < 1:
            raise ValueError(f"{self.name}: width, resolution and head_channels must be positive")


class ConvBNReLU(nn.Sequential):
    """Conv -> BatchNorm -> ReLU6 (the MobileNetV2 building block)."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise (3x3) -> linear project (1x1), with a skip when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvBNReLU(cin, hidden, kernel=1))
        layers += [
            ConvBNReLU(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.block = nn.Sequential(*layers)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.skip else y


class MobileNetV2(nn.Module):
    """MobileNetV2 body + head on a normalised float input of shape [N, C, resolution, resolution]."""

    def __init__(self, spec: ArchSpec, in_channels: int, classes: int) -> None:
        super().__init__()
        stem = make_divisible(STEM_CHANNELS * spec.width)
        layers: list[nn.Module] = [ConvBNReLU(in_channels, stem, stride=spec.stem_stride)]
        cin = stem
        for (expand, channels), blocks, stride in zip(STAGES, spec.depth, spec.strides, strict=True):
            cout = make_divisible(channels * spec.width)
            for i in range(blocks):
                layers.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expand))
                cin = cout
        layers.append(ConvBNReLU(cin, spec.head_channels, kernel=1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(spec.dropout), nn.Linear(spec.head_channels, classes))
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.classifier(x)


class Preprocess(nn.Module):
    """Raw uint8 pixels [N, C, H, W] -> float, scaled to [0, 1], normalised, resized to the model's resolution.

    Lives inside the exported graph so every model of a family takes the same bytes.
    Resizing is bilinear (half-pixel centres, no antialias) so ONNX Resize reproduces it exactly.
    """

    def __init__(self, resolution: int, native: int, mean: float, std: float) -> None:
        super().__init__()
        self.resolution = resolution
        self.native = native
        self.register_buffer("scale", torch.tensor(1.0 / (255.0 * std), dtype=torch.float32))
        self.register_buffer("shift", torch.tensor(mean / std, dtype=torch.float32))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.to(torch.float32) * self.scale - self.shift
        if self.resolution != self.native:
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False)
        return x


class Classifier(nn.Module):
    """Preprocess + network: uint8 images in, logits out (what training optimises)."""

    def __init__(self, spec: ArchSpec, in_channels: int, native: int, classes: int, mean: float, std: float):
        super().__init__()
        self.spec = spec
        self.preprocess = Preprocess(spec.resolution, native, mean, std)
        self.net = MobileNetV2(spec, in_channels, classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(self.preprocess(image))


class Exported(nn.Module):
    """What ships as ONNX: uint8 `image` in, softmax `probs` out."""

    def __init__(self, classifier: Classifier) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.classifier(image), dim=1)
