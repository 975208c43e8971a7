"""VGG16-BN building blocks with a width multiplier, split into device and cloud parts.

VGG16-BN has five blocks of 3x3 conv + BN + ReLU, each ending in a 2x2 max-pool.
The obfuscator runs blocks [0, split); the cloud classifier runs the rest, then
flattens into a small MLP head (the paper: FC 4096-4096-1, dropout 0.5).
"""

from __future__ import annotations

import torch
from torch import nn

from ..geometry import VGG16_BLOCKS, block_widths, pooled_size, scaled

__all__ = ["VGG16_BLOCKS", "MLPHead", "block_widths", "conv_bn_relu", "pooled_size", "scaled",
           "vgg_block"]

def conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True)]


def vgg_block(c_in: int, widths: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for c in widths:
        layers += conv_bn_relu(c_in, c)
        c_in = c
    layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class MLPHead(nn.Module):
    """Flatten -> FC hidden -> ReLU -> dropout -> FC hidden -> ReLU -> dropout -> logits:
    (B,) for one output, (B, outputs) for several (one per binary task, K per K-class)."""

    def __init__(self, in_features: int, hidden: int, dropout: float, outputs: int = 1) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, outputs),
        )
        self.outputs = outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out.squeeze(1) if self.outputs == 1 else out
