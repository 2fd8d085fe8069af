"""Parameter and multiply-accumulate counts.

MACs come from torch.utils.flop_counter.FlopCounterMode (PyTorch's own counter): FLOPs of convolutions and
matrix products for one input at the model's resolution, divided by 2. BatchNorm, activations, pooling, the
in-graph resize and softmax are not MACs and are not counted (they are a few percent of the work).
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from .arch import ArchSpec, MobileNetV2


def count_params(module: torch.nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def count_macs(spec: ArchSpec, in_channels: int, classes: int) -> int:
    """Multiply-accumulates of the network for one input of shape [1, C, resolution, resolution]."""
    net = MobileNetV2(spec, in_channels, classes).eval()
    x = torch.zeros(1, in_channels, spec.resolution, spec.resolution)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(x)
    return counter.get_total_flops() // 2


def count_spec(spec: ArchSpec, in_channels: int, classes: int) -> tuple[int, int]:
    """(params, macs) of a spec."""
    return count_params(MobileNetV2(spec, in_channels, classes)), count_macs(spec, in_channels, classes)
