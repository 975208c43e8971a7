"""White-box optimisation: an image whose features match, through E's known weights."""

from __future__ import annotations

import copy

import torch

from ...attackers.whitebox import WhiteBoxAttack
from ..figures import FigureSpec
from ..image_metrics import image_scores, summarize
from . import AttackContext, AuditAttack, register_attack


@register_attack
class WhiteBox(AuditAttack):
    name = "whitebox"
    figures = (
        FigureSpec("whitebox_msssim", "Reconstruction MS-SSIM (white-box)", "white-box MS-SSIM",
                   ("whitebox", "msssim", "mean"), "lower",
                   ("reconstruction_mean_image", "msssim", "mean")),
    )

    def run(self, ctx: AttackContext) -> dict:
        s = ctx.settings
        k = min(s.whitebox_images, len(ctx.test))
        # the test photos' own size: E with a learned gain per position takes no other
        wb = WhiteBoxAttack(without_noise(ctx.models.encoder), steps=s.whitebox_steps,
                            device=ctx.device, progress=s.progress,
                            image_size=(ctx.test.images.shape[-2], ctx.test.images.shape[-1]),
                            precision=ctx.fit.precision)  # the audit's, like every attacker
        recon = wb.reconstruct(ctx.test.features[:k])
        scores = image_scores(recon, ctx.test.images[:k])
        ctx.arrays.update({f"whitebox_{m}": v for m, v in scores.items()})
        return {"whitebox": {**summarize(scores), "images": k, "steps": s.whitebox_steps}}


def without_noise(encoder: torch.nn.Module) -> torch.nn.Module:
    """The white-box attacker holds E's weights and can run it without the feature noise."""
    if getattr(encoder, "noise_std", 0.0) <= 0:
        return encoder
    clean = copy.deepcopy(encoder)
    setattr(clean, "noise_std", 0.0)  # noqa: B010 (an nn.Module attribute, not a weight)
    return clean
