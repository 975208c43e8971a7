"""The run's own training-time adversaries on the test features: a defence that fools
only these, while fresh attackers succeed, has overfit its own adversary."""

from __future__ import annotations

from ...methods import trains_attackers
from ...metrics import balanced_accuracy, roc_auc
from ..features import training_adversary_scores, training_reconstructions
from ..figures import FigureSpec
from ..image_metrics import image_scores, summarize
from . import AttackContext, AuditAttack, register_attack


@register_attack
class OwnAdversaries(AuditAttack):
    name = "training_adversaries"
    figures = (
        FigureSpec("own:{attr}", "{attr}: the run's own adversary, balanced accuracy",
                   "own {attr}", ("training_adversaries", "{attr}", "balanced_accuracy"),
                   "lower", 0.5, per="private", section="training"),
        FigureSpec("own_msssim", "Reconstruction MS-SSIM (the run's own decoder)",
                   "own MS-SSIM", ("training_reconstructor", "msssim", "mean"), "lower",
                   ("reconstruction_mean_image", "msssim", "mean"), section="training"),
    )

    def applies(self, ctx: AttackContext) -> bool:
        return trains_attackers(ctx.cfg)

    def run(self, ctx: AttackContext) -> dict:
        test = ctx.test
        # by the run's own attribute names, those the test data also has (a cross-dataset
        # audit may name them differently)
        names = [a for a in ctx.models.adversaries.keys() if a in test.attributes]
        own = training_adversary_scores(ctx.models, test.features, names, ctx.device)
        recon = training_reconstructions(ctx.models, test.features, ctx.device)
        return {
            "training_adversaries": {
                a: {"balanced_accuracy": balanced_accuracy(test.attributes[a], v, 0.5),
                    "auc": roc_auc(test.attributes[a], v)} for a, v in own.items()},
            "training_reconstructor": summarize(image_scores(recon, test.images))}
