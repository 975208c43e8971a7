"""A learned inverse network: reconstruct the face from the features."""

from __future__ import annotations

from ...attackers.base import FitResult
from ...attackers.inversion import InversionAttack
from ..figures import FigureSpec
from ..image_metrics import image_scores, summarize
from . import AttackContext, AuditAttack, View, pick_view, register_attack
from ._weights import save_weights

_MEAN_FACE = ("reconstruction_mean_image",)


@register_attack
class InverseNetwork(AuditAttack):
    name = "inversion"
    figures = (
        FigureSpec("inversion_msssim", "Reconstruction MS-SSIM (inverse network)",
                   "inversion MS-SSIM", ("inversion", "msssim", "mean"), "lower",
                   (*_MEAN_FACE, "msssim", "mean"), headline=True),
        FigureSpec("inversion_ssim", "Reconstruction SSIM (inverse network)", "inversion SSIM",
                   ("inversion", "ssim", "mean"), "lower", (*_MEAN_FACE, "ssim", "mean")),
        FigureSpec("inversion_psnr", "Reconstruction PSNR dB (inverse network)",
                   "inversion PSNR", ("inversion", "psnr", "mean"), "lower",
                   (*_MEAN_FACE, "psnr", "mean"), fmt="{:.2f}", unit="dB"),
    )

    def run(self, ctx: AttackContext) -> dict:
        def fit_one(view: View) -> tuple[InversionAttack, FitResult]:
            inv = InversionAttack(tuple(view.train.features.shape[1:]),  # type: ignore[arg-type]
                                  tuple(ctx.cfg.data.image_size), ctx.fit)  # type: ignore[arg-type]
            return inv, inv.fit(view.train)

        def leak(view: View, inv: InversionAttack) -> tuple[float, tuple]:
            recon = inv.reconstruct(view.test)
            scores = image_scores(recon, ctx.test.images)
            return float(scores["msssim"].mean()), (recon, scores)

        _, inv, (recon, scores) = pick_view(ctx, "inversion", fit_one, leak)
        ctx.arrays.update({f"inversion_{k}": v for k, v in scores.items()})
        ctx.products["reconstructions"] = recon
        save_weights(inv.model, ctx.weights_dir / "inversion.safetensors")
        return {"inversion": summarize(scores)}
