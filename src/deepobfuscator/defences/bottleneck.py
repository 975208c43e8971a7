"""The bottleneck (model.bottleneck, model.bottleneck_context): a 1x1 conv at the split to
a few channels, so fewer numbers go on the wire and there is less room for private
information."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import ConfigError
from .base import Defence, Shape, register_defence

if TYPE_CHECKING:
    from ..config_schema import Config


class BottleneckStage(nn.Module):
    """conv 1x1 + BN (+ ReLU without the cap: with it the bottleneck stays linear, as signed
    values carry twice the signal of rectified ones at the same power). With `context`, a
    linear map of the split's spatial mean is added at every position."""

    def __init__(self, c_in: int, channels: int, rectify: bool, context: bool) -> None:
        super().__init__()
        tail: list[nn.Module] = [nn.ReLU(inplace=True)] if rectify else []
        self.net = nn.Sequential(nn.Conv2d(c_in, channels, 1, bias=False),
                                 nn.BatchNorm2d(channels), *tail)
        # A 1x1 bottleneck at the paper's split sees a patch, not the face: a whole-image
        # answer (smiling) exists only near the mouth, where the cap's noise drowns it. The
        # context lets E repeat one global signal over every position, which the cloud can
        # average back out of the noise (c_in x channels MACs).
        self.context = nn.Linear(c_in, channels) if context else None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        z = self.net(h)
        if self.context is not None:
            z = z + self.context(h.mean(dim=(2, 3)))[:, :, None, None]
        return z


@register_defence
class Bottleneck(Defence):
    name = "bottleneck"
    summary = "a 1x1 conv to model.bottleneck channels at the split (fewer numbers sent)"
    order = 10
    keys = ("model.bottleneck", "model.bottleneck_context")
    # the reference uploads the split's whole feature map
    baseline = ("model.bottleneck=0", "model.bottleneck_context=false")
    legacy_state = {"bottleneck.": "stages.bottleneck.net.",
                    "context.": "stages.bottleneck.context."}

    def enabled(self, cfg: Config) -> bool:
        return cfg.model.bottleneck > 0

    def validate(self, cfg: Config) -> None:
        if cfg.model.bottleneck < 0:
            raise ConfigError(f"model.bottleneck={cfg.model.bottleneck} must be >= 0 (0: no "
                              "bottleneck, the split's whole feature map is uploaded)")
        if cfg.model.bottleneck_context and cfg.model.bottleneck <= 0:
            raise ConfigError("model.bottleneck_context=true needs a bottleneck to add the "
                              "context to; set model.bottleneck >= 1")

    def build(self, cfg: Config, shape: Shape) -> nn.Module:
        return BottleneckStage(shape[0], cfg.model.bottleneck,
                               rectify=not cfg.privacy.normalize_features,
                               context=cfg.model.bottleneck_context)

    def out_shape(self, cfg: Config, shape: Shape) -> Shape:
        return cfg.model.bottleneck, shape[1], shape[2]
