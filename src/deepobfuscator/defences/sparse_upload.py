"""A sparse upload (model.upload_positions): only the numbers that carry the signal.

With the information cap and a learned gain per position, the phone puts nearly all of
the cap's power on a few positions (the mouth, for `Smiling`); the others are noise. When
training ends, the finish phase keeps the K positions with the most signal power on the
defender's training images and the obfuscator sends only those: the mask comes after the
cap and the noise, so the K numbers are exactly those of the full upload (a subset: an
attacker of the sparse upload knows no more than one of the full upload), and no weight
of the obfuscator changes. The cloud gets zeros where nothing was sent; it re-fits to
them (train.upload_tune_epochs, the finish phase's last step).

Training and the audit keep the (C, H, W) layout with zeros, so attackers see the
spatial map they would rebuild from the manifest's positions. The export packs the K
numbers as a (1, 1, K) feature tensor and the cloud model scatters them back
(models/upload.py): the wire format and every client stay as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..geometry import split_shape
from .base import Defence, FitContext, Shape, all_defences, register_defence

if TYPE_CHECKING:
    from ..config_schema import Config

# images scored to choose the positions (the first ones of the defender's training split)
CHOOSE_IMAGES = 2048


class UploadMask(nn.Module):
    """1 where a number is uploaded, 0 where it is not sent. All ones until the finish
    phase chooses, so training computes exactly what it would without it."""

    def __init__(self, shape: Shape) -> None:
        super().__init__()
        self.mask: torch.Tensor
        self.register_buffer("mask", torch.ones(1, *shape))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # a state from before this stage existed (a reused task stage of a run without
        # it): the stage starts unfitted
        state_dict.setdefault(prefix + "mask", self.mask.clone())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.mask


@torch.no_grad()
def position_power(encoder: Any, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Mean signal power (before the noise, every position sent) of each position of the
    upload, over the first CHOOSE_IMAGES of `images` (N, H, W, 3) uint8; shape (C, H, W).
    Leaves the encoder's mask at all ones."""
    stage = encoder.stage("upload")
    if stage is None:
        raise ValueError("the obfuscator was built without model.upload_positions")
    mask = stage.mask
    mask.fill_(1.0)
    with encoder.noise_free():
        power = torch.zeros(mask.shape[1:], dtype=torch.float64, device=mask.device)
        n = min(len(images), CHOOSE_IMAGES)
        for i in range(0, n, batch_size):
            x = images[i:i + batch_size].permute(0, 3, 1, 2).float().div(255.0)
            z = encoder(x.to(mask.device)).float()
            power += z.double().pow(2).sum(0)
    return power


def keep_strongest(mask: torch.Tensor, power: torch.Tensor, k: int) -> torch.Tensor:
    """Set `mask` (1, C, H, W) to the k positions of highest `power`; ties go to the lower
    index. Returns the mask."""
    order = torch.argsort(-power.flatten().cpu(), stable=True)[:k]
    chosen = torch.zeros(power.numel())
    chosen[order] = 1.0
    mask.copy_(chosen.view_as(mask))
    return mask


def choose_upload_positions(encoder: Any, images: torch.Tensor, k: int) -> torch.Tensor:
    """Set the encoder's upload mask to the k positions of highest mean signal power over
    `images`. A pure function of the encoder's weights and the images, so a resumed run
    recomputes the same choice."""
    return keep_strongest(encoder.stage("upload").mask, position_power(encoder, images), k)


def fewest_positions(mask: torch.Tensor, power: torch.Tensor, most: int,
                     score: Callable[[], float], tolerance: float
                     ) -> tuple[int, dict[str, float]]:
    """The fewest of the strongest positions, halving from `most`, whose task score
    (`score()` with the current `mask`; higher is better) stays within `tolerance` of the
    full upload's; stops at the first count that falls short. Returns (count, the score of
    every count tried, "all" for the full upload). Leaves the mask at all ones."""
    mask.fill_(1.0)
    tried = {"all": score()}
    best, k = most, most
    while k >= 1:
        keep_strongest(mask, power, k)
        tried[str(k)] = score()
        if tried[str(k)] < tried["all"] - tolerance:
            break
        best, k = k, k // 2
    mask.fill_(1.0)
    return best, tried


@register_defence
class SparseUpload(Defence):
    name = "upload"
    summary = ("send only the model.upload_positions numbers with the most signal power "
               "(chosen when training ends)")
    order = 70  # last: the sent numbers are exactly those of the full upload
    keys = ("model.upload_positions",)
    baseline = ("model.upload_positions=0",)
    in_task_stage = False
    fit_order = 10  # first: later fits see only the numbers sent
    finish_step = "positions"
    legacy_state = {"upload_mask": "stages.upload.mask"}

    def enabled(self, cfg: Config) -> bool:
        # K >= the map's size sends it whole: a default K holds for any split
        return 0 < cfg.model.upload_positions < int(np.prod(self._shape_before(cfg)))

    def _shape_before(self, cfg: Config) -> Shape:
        shape = split_shape(cfg)
        for d in all_defences():
            if d.order < self.order and d.enabled(cfg):
                shape = d.out_shape(cfg, shape)
        return shape

    def validate(self, cfg: Config) -> None:
        if cfg.model.upload_positions < 0:
            raise ConfigError(f"model.upload_positions={cfg.model.upload_positions} must be "
                              ">= 0 (0: upload every number)")

    def build(self, cfg: Config, shape: Shape) -> nn.Module:
        return UploadMask(shape)

    def manifest(self, cfg: Config, stage: nn.Module) -> dict | None:
        return {"sent": cfg.model.upload_positions}

    def fit(self, stage: nn.Module, ctx: FitContext) -> dict:
        choose_upload_positions(ctx.encoder, ctx.images, ctx.cfg.model.upload_positions)
        return {"upload_positions": ctx.cfg.model.upload_positions}
