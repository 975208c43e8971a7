"""Repeated uploads: a server that receives the same photo N times averages the noise.

The device adds fresh Gaussian noise to every upload (privacy.feature_noise), so a photo
sent N times (a retry, a reload, frames of a still scene) reaches the server as N noisy
copies of one upload; their mean has the noise's variance divided by N, and the cap's
bound in bits grows with N (audit/bounds.py). For each N of the audit setting `repeats`
(> 1), the attacker split's and the test split's photos are each uploaded N times (fresh
noise, each copy through the wire format), the copies averaged, and every repeatable
attack (the attribute probes, the identity attacks on the features, the strongest-identity
summary) trained and scored again on the means. Exports with noise keyed to the photo
(deploy/keyed_noise.py) send the same upload every time: N = 1 is then the whole story.
The largest N is also stored under "largest", which the figures read.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ...attackers.base import FeatureSet
from ..features import through_wire
from ..figures import FigureSpec
from . import AttackContext, AuditAttack, register_attack, run_attacks
from .pooled import counts


@torch.no_grad()
def noise_free_uploads(ctx: AttackContext, images: torch.Tensor,
                       batch_size: int = 256) -> torch.Tensor:
    """The obfuscator's upload of each image without the device's noise (float32)."""
    enc = ctx.models.encoder
    with enc.noise_free():
        return torch.cat([enc(images[i:i + batch_size].to(ctx.device)).float().cpu()
                          for i in range(0, len(images), batch_size)])


def mean_of_uploads(ctx: AttackContext, clean: torch.Tensor, n: int,
                    generator: torch.Generator, batch_size: int = 256) -> torch.Tensor:
    """The mean of n uploads of each clean feature map: fresh device noise on each copy,
    each copy through the audit's wire format as a phone would send it."""
    total = torch.zeros_like(clean)
    for _ in range(n):
        noisy = clean + ctx.models.encoder.upload_noise(tuple(clean.shape), generator)
        fs = FeatureSet(features=noisy, images=torch.zeros(0), attributes={})
        total += through_wire(fs, ctx.settings.wire, batch_size).features
    return total / n


@register_attack
class RepeatedUploads(AuditAttack):
    name = "repeats"
    figures = (
        FigureSpec("repeats_attribute:{attr}", "{attr}: attacker averaging repeated uploads "
                   "of each photo (balanced acc., most repeats)", "{attr}: repeated uploads",
                   ("repeats", "largest", "attributes", "{attr}", "balanced_accuracy"),
                   "lower", 0.5, per="private"),
        FigureSpec("repeats_identity_top1", "Identity top-1 averaging repeated uploads of each "
                   "photo (strongest attack, most repeats)", "identity top-1 (repeated)",
                   ("repeats", "largest", "identity", "top1"), "lower", ("reid", "top1")),
    )

    def applies(self, ctx: AttackContext) -> bool:
        return ctx.models.encoder.noise_std > 0 and \
            max(counts(ctx.settings.repeats, "repeats")) > 1

    def run(self, ctx: AttackContext) -> dict:
        clean = {"attacker": noise_free_uploads(ctx, ctx.attacker.images),
                 "test": noise_free_uploads(ctx, ctx.test.images)}
        out: dict = {}
        for n in counts(ctx.settings.repeats, "repeats")[1:]:
            gen = torch.Generator().manual_seed(1_000_003 * ctx.settings.seed + n)
            sub = AttackContext(
                run=ctx.run, cfg=ctx.cfg, models=ctx.models,
                attacker=replace(ctx.attacker,
                                 features=mean_of_uploads(ctx, clean["attacker"], n, gen)),
                test=replace(ctx.test, features=mean_of_uploads(ctx, clean["test"], n, gen)),
                attributes=[a for a in ctx.attributes if a in ctx.cfg.data.private],
                settings=ctx.settings, fit=ctx.fit, device=ctx.device,
                weights_dir=ctx.weights_dir / f"repeats{n}", embedder=ctx.embedder,
                task_labels=ctx.task_labels)
            out[str(n)] = {"uploads": n, **run_attacks(sub, repeatable_only=True),
                           "curves": sub.curves}
        if out:
            out["largest"] = {k: v for k, v in out[max(out, key=int)].items() if k != "curves"}
        return {"repeats": out}
