"""The information term's critics (`privacy.robust.info_weight`, docs/robust.md).

After TIPRDC (Li et al., KDD 2020) and MaSS (Chen et al., ICML 2024): besides suppressing
the named private attributes, the obfuscator E is asked to keep what tells one photo from
another, measured by InfoNCE between the upload z and the photo x. Two small critics embed
both sides: f(x) sees the raw photo, g(z) the upload behind the attackers' standardising
layer (so E cannot score by scaling its features). For a batch of B pairs,

    loss_info = CE( normalize(g(z)) @ normalize(f(x)).T / temperature, diagonal )

and log B - loss_info is a lower bound on I(z; x). E, C, f and g all minimise it (the
critics are cooperative, not adversaries).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config
from ..methods import method_for
from .attackers import BatchStandardized

EMBEDDING = 64


def info_term_on(cfg: Config) -> bool:
    """Whether a config's runs train the critics: info_weight > 0 under a method that
    reads privacy.robust (not task-continuation, for which the key is inert)."""
    return cfg.privacy.robust.info_weight > 0 and "privacy.robust" in method_for(cfg).reads


def _down(c_in: int, c_out: int) -> list[nn.Module]:
    # GroupNorm, not BatchNorm: a per-image normalisation, so no batch statistics let the
    # contrastive critic tell the pairs of a batch apart by something other than content
    return [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.GroupNorm(8, c_out), nn.ReLU()]


class ImageCritic(nn.Module):
    """f(x): three strided convs, a global average pool and a linear map to the embedding."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(*_down(3, width), *_down(width, 2 * width),
                                 *_down(2 * width, 2 * width), nn.AdaptiveAvgPool2d(1),
                                 nn.Flatten(), nn.Linear(2 * width, EMBEDDING))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def feature_critic(shape: tuple[int, int, int], width: int = 32) -> nn.Module:
    """g(z): the attackers' standardising layer, a strided conv, a 4x4 pool (the coarse
    layout of the map survives: a sparse upload's few positions are not averaged into one
    number) and a linear map to the embedding."""
    net = nn.Sequential(nn.Conv2d(shape[0], width, 3, stride=2, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(16 * width, EMBEDDING))
    return BatchStandardized(shape[0], net)


class InfoCritics(nn.Module):
    """Both critics in one module: one entry of Models (`critics`), checkpointed with it."""

    def __init__(self, shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.image = ImageCritic()
        self.features = feature_critic(shape)

    def forward(self, z: torch.Tensor, x: torch.Tensor, temperature: float) -> torch.Tensor:
        """InfoNCE of the batch's (z, x) pairs."""
        return info_nce(self.features(z), self.image(x), temperature)


def info_nce(z_emb: torch.Tensor, x_emb: torch.Tensor, temperature: float) -> torch.Tensor:
    """Cross-entropy of each upload's cosine similarities to the batch's photos (divided by
    `temperature`) against its own photo: log B when the embeddings carry nothing, 0 when
    each upload picks its photo with certainty."""
    a = F.normalize(z_emb.float(), dim=1)
    b = F.normalize(x_emb.float(), dim=1)
    logits = a @ b.T / temperature
    return F.cross_entropy(logits, torch.arange(len(a), device=a.device))
