"""The fresh attackers' networks (attackers/ trains and scores them; the robust method trains
against the same ones, models/attackers.py): attribute probes of three families and the
inverse network, each behind a standardising input layer."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .vgg import conv_bn_relu

FAMILIES = ("linear", "mlp", "cnn")
HEAD_GRID = 4  # the last feature map is pooled to 4x4 and flattened: keeps where things are


class Standardized(nn.Module):
    """A fresh attacker's input layer: per-channel statistics of its training features (set
    by `set_normalization` before fitting). An obfuscator may shrink or blow up channels,
    or shift their mean; the attacker should not care."""

    mean: torch.Tensor  # buffers, registered in __init__
    std: torch.Tensor

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(1, channels, 1, 1))
        self.register_buffer("std", torch.ones(1, channels, 1, 1))

    def set_normalization(self, features: torch.Tensor) -> None:
        self.mean.copy_(features.mean((0, 2, 3), keepdim=True))
        self.std.copy_(features.std((0, 2, 3), keepdim=True).clamp_min(1e-6))

    def standardize(self, z: torch.Tensor) -> torch.Tensor:
        return ((z - self.mean) / self.std).contiguous(memory_format=torch.channels_last)


class ProbeNetwork(Standardized):
    """Standardise -> conv3x3-BN-ReLU, then (max-pool, conv) until ~4x4 with doubling
    width (capped at 2x) -> 4x4 average grid -> flatten -> dropout MLP -> 1 logit."""

    def __init__(self, feature_shape: tuple[int, int, int], width: int = 64,
                 hidden: int = 128, dropout: float = 0.3) -> None:
        c, h, w = feature_shape
        super().__init__(c)
        pools = max(0, math.ceil(math.log2(max(min(h, w), 1) / HEAD_GRID)))
        layers, ch = conv_bn_relu(c, width), width
        for _ in range(pools):
            nxt = min(ch * 2, width * 2)
            layers += [nn.MaxPool2d(2), *conv_bn_relu(ch, nxt)]
            ch = nxt
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(HEAD_GRID), nn.Flatten(), nn.Dropout(dropout),
            nn.Linear(ch * HEAD_GRID * HEAD_GRID, hidden), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(hidden, 1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.standardize(z))).squeeze(1)


class FlatProbe(Standardized):
    """Standardise -> flatten every number -> a logistic regression (hidden=0), or an MLP
    with two hidden layers of `hidden` units -> 1 logit."""

    def __init__(self, feature_shape: tuple[int, int, int], hidden: int = 0,
                 dropout: float = 0.3) -> None:
        c, h, w = feature_shape
        super().__init__(c)
        d = c * h * w
        layers: list[nn.Module] = [nn.Flatten()]
        if hidden:
            layers += [nn.Linear(d, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                       nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
                       nn.Dropout(dropout), nn.Linear(hidden, 1)]
        else:
            layers.append(nn.Linear(d, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.standardize(z).contiguous()).squeeze(1)


def probe_network(family: str, feature_shape: tuple[int, int, int],
                  width: int = 64) -> Standardized:
    """A fresh probe of one family (FAMILIES) for features of shape (C, h, w)."""
    if family == "cnn":
        return ProbeNetwork(feature_shape, width)
    if family == "mlp":
        return FlatProbe(feature_shape, hidden=256)
    if family == "linear":
        return FlatProbe(feature_shape)
    raise ValueError(f"unknown probe family {family!r}: use one of {', '.join(FAMILIES)}")


class _Residual(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*conv_bn_relu(c, c), nn.Conv2d(c, c, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class InversionNetwork(Standardized):
    """Features (C, h, w) -> image (3, H, W) in [0, 1].

    Standardise -> conv3x3 stem -> `blocks` residual blocks at feature resolution, then per
    2x stage: bilinear upsample to that stage's exact size, conv-BN-ReLU x2, with the width
    halving each stage (at least 16; full resolution is where convolutions cost most) ->
    conv3x3 to RGB -> sigmoid. Stage sizes are the image size halved (floor) k times, the
    last being exactly (H, W), so odd and non-square images work.
    """

    def __init__(self, feature_shape: tuple[int, int, int], image_size: tuple[int, int],
                 width: int = 64, blocks: int = 2) -> None:
        c, h, w = feature_shape
        super().__init__(c)
        big_h, big_w = image_size
        n_up = max(0, round(math.log2(max(min(big_h / h, big_w / w), 1.0))))
        self.sizes = [(big_h >> k, big_w >> k) for k in range(n_up - 1, -1, -1)]
        self.stem = nn.Sequential(*conv_bn_relu(c, width), *[_Residual(width)
                                                               for _ in range(blocks)])
        stages, ch = [], width
        for _ in self.sizes:
            nxt = max(16, ch // 2)
            stages.append(nn.Sequential(*conv_bn_relu(ch, nxt), *conv_bn_relu(nxt, nxt)))
            ch = nxt
        self.stages = nn.ModuleList(stages)
        self.out = nn.Conv2d(ch, 3, 3, padding=1)
        self.image_size = (big_h, big_w)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.standardize(z)
        x = self.stem(x)
        for size, stage in zip(self.sizes, self.stages, strict=True):
            x = stage(F.interpolate(x, size=size, mode="bilinear", align_corners=False))
        if tuple(x.shape[-2:]) != self.image_size:  # no 2x stage (features at image size)
            x = F.interpolate(x, size=self.image_size, mode="bilinear", align_corners=False)
        # the last conv in float32: a bf16 output would quantise pixels to ~1/256
        with torch.autocast(x.device.type, enabled=False):
            return torch.sigmoid(self.out(x.float()))
