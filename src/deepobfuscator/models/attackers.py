"""Training-time attackers of `privacy.method=robust`: the audit's own architectures.

A defence that only beats a weaker, differently built adversary proves nothing, so the
robust method trains against the attacker networks the audit uses (the CNN probe and the
inverse network of attackers/), each behind a standardising layer: a BatchNorm without
affine weights. In training mode it normalises every batch by its own statistics, as a
fresh attacker standardises its input, so the obfuscator cannot hide by shifting or
scaling its features.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from ..config import Config


class BatchStandardized(nn.Module):
    """Per-channel standardisation of each training batch by its own statistics, then
    `net`: for attackers trained while the features still move. A fresh attacker of frozen
    features standardises by fixed statistics instead (attack_nets.Standardized)."""

    def __init__(self, channels: int, net: nn.Module) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.net = net

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.norm(z.float()).contiguous(memory_format=torch.channels_last))


class Ensemble(nn.Module):
    """Several attribute adversaries for one attribute; `forward` is their mean logit (what
    the audit and validation read as "the training adversary")."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(z) for m in self.members]).mean(0)

    def each(self, z: torch.Tensor) -> list[torch.Tensor]:
        return [m(z) for m in self.members]


def new_probe(shape: tuple[int, int, int]) -> nn.Module:
    from .attack_nets import ProbeNetwork

    return BatchStandardized(shape[0], ProbeNetwork(shape))


def new_decoder(shape: tuple[int, int, int], image_size: tuple[int, int],
                width: int) -> nn.Module:
    from .attack_nets import InversionNetwork

    return BatchStandardized(shape[0], InversionNetwork(shape, image_size, width))


def robust_attackers(cfg: Config, shape: tuple[int, int, int],
                     names: list[str]) -> tuple[nn.ModuleDict, nn.Module]:
    """(one Ensemble per private attribute, the training decoder R)."""
    r = cfg.privacy.robust
    adversaries = nn.ModuleDict({
        n: Ensemble([new_probe(shape) for _ in range(r.ensemble)]) for n in names})
    decoder = new_decoder(shape, cast("tuple[int, int]", tuple(cfg.data.image_size)),
                          r.decoder_width)
    return adversaries, decoder


def reinit_member(ensemble: Ensemble, index: int, shape: tuple[int, int, int],
                  optimizer: torch.optim.Optimizer | None = None) -> None:
    """Member `index` restarts from fresh weights (drawn from the torch RNG) and, when
    given, loses its optimizer state, as a newly hired attacker would."""
    member = ensemble.members[index]
    fresh = new_probe(shape).to(next(member.parameters()).device)
    member.load_state_dict(fresh.state_dict())
    if optimizer is not None:
        for p in member.parameters():
            optimizer.state.pop(p, None)
