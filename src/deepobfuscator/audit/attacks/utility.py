"""Utility: what the cloud classifier answers from the features."""

from __future__ import annotations

from ...metrics import accuracy, balanced_accuracy, roc_auc
from ..features import cloud_scores
from ..figures import FigureSpec
from . import AttackContext, AuditAttack, register_attack


@register_attack
class CloudUtility(AuditAttack):
    name = "utility"
    figures = (
        FigureSpec("utility_accuracy", "Utility: cloud {task} accuracy",
                   "task accuracy (utility)", ("utility", "accuracy"), "higher",
                   ("attributes", "{task}", "majority_rate"), section="utility",
                   headline=True),
        FigureSpec("utility_auc", "Utility: cloud {task} AUC", "task AUC (utility)",
                   ("utility", "auc"), "higher", 0.5, section="utility"),
    )

    def run(self, ctx: AttackContext) -> dict:
        task = ctx.cfg.data.task
        p = cloud_scores(ctx.models, ctx.test.features, ctx.device)
        y = ctx.test.attributes[task]
        ctx.arrays["task_prob"] = p
        return {"utility": {"task": task, "accuracy": accuracy(y, p, 0.5),
                            "balanced_accuracy": balanced_accuracy(y, p, 0.5),
                            "auc": roc_auc(y, p)}}
