"""Utility: what the cloud classifier answers from the features."""

from __future__ import annotations

from ...metrics import finite_mean, task_scores
from ...tasks import task_set
from ..features import cloud_logits
from ..figures import FigureSpec
from . import AttackContext, AuditAttack, register_attack


@register_attack
class CloudUtility(AuditAttack):
    name = "utility"
    figures = (
        # one task: its figures; several: the means over the tasks (each task's own below)
        FigureSpec("utility_accuracy", "Utility: cloud {task} accuracy",
                   "task accuracy (utility)", ("utility", "accuracy"), "higher",
                   ("tasks", "{task}", "majority_rate"), section="utility",
                   headline=True),
        FigureSpec("utility_auc", "Utility: cloud {task} AUC", "task AUC (utility)",
                   ("utility", "auc"), "higher", 0.5, section="utility"),
        FigureSpec("utility_bal_acc", "Utility: cloud {task} balanced accuracy",
                   "task balanced accuracy (utility)", ("utility", "balanced_accuracy"),
                   "higher", 0.5, section="utility"),
        FigureSpec("utility:{attr}", "Utility: cloud {attr} balanced accuracy",
                   "{attr}: cloud balanced accuracy",
                   ("utility", "tasks", "{attr}", "balanced_accuracy"), "higher",
                   ("tasks", "{attr}", "chance"), per="task", section="utility"),
    )

    def run(self, ctx: AttackContext) -> dict:
        tasks = task_set(ctx.cfg)
        logits = cloud_logits(ctx.models, ctx.test.features, ctx.device)
        y = ctx.task_labels
        per = {}
        for k, (t, p) in enumerate(zip(tasks, tasks.probabilities(logits), strict=True)):
            per[t.name] = task_scores(y[:, k], p.numpy())
            ctx.arrays[f"task_prob_{t.name}" if len(tasks) > 1 else "task_prob"] = p.numpy()
        if tasks.single:
            return {"utility": {"task": tasks.names[0], **per[tasks.names[0]]}}
        mean = {key: finite_mean([s[key] for s in per.values()])
                for key in ("accuracy", "balanced_accuracy", "auc")}
        return {"utility": {"task": tasks.label, **mean, "tasks": per}}
