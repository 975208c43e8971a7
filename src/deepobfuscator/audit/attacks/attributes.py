"""Fresh attribute probes: a CNN per attribute on the features (the task's too)."""

from __future__ import annotations

from ...attacks.attribute_probe import AttributeProbe, score_attribute
from ..figures import FigureSpec
from . import AttackContext, AuditAttack, learned_view, register_attack
from ._weights import save_weights


@register_attack
class AttributeProbes(AuditAttack):
    name = "attributes"
    figures = (
        FigureSpec("attribute:{attr}", "{attr}: attacker balanced accuracy",
                   "{attr}: attacker balanced accuracy",
                   ("attributes", "{attr}", "balanced_accuracy"), "lower", 0.5, per="private",
                   headline=True),
        FigureSpec("attribute_auc:{attr}", "{attr}: attacker ROC AUC", "{attr}: attacker AUC",
                   ("attributes", "{attr}", "roc_auc"), "lower", 0.5, per="private"),
        # the same probe at the cut it chose on its own held-out split
        FigureSpec("attribute_tuned:{attr}", "{attr}: attacker balanced accuracy, own threshold",
                   "{attr}: attacker balanced accuracy (own threshold)",
                   ("attributes", "{attr}", "balanced_accuracy_tuned"), "lower", 0.5,
                   per="private"),
        # what anyone (the cloud included) can learn about the task from the features
        FigureSpec("task_probe", "{task} from features by a fresh probe (balanced acc.)",
                   "{task}: fresh probe balanced accuracy",
                   ("attributes", "{task}", "balanced_accuracy"), "higher", 0.5,
                   section="utility"),
    )

    def run(self, ctx: AttackContext) -> dict:
        train, test = learned_view(ctx)
        shape = tuple(train.features.shape[1:])
        out = {}
        for a in ctx.attributes:
            probe = AttributeProbe(shape, ctx.fit)  # type: ignore[arg-type]
            ctx.curves[f"probe_{a}"] = probe.fit(train, a).to_dict()
            probs = probe.infer(test)
            out[a] = score_attribute(ctx.test.attributes[a], probs, probe.threshold)
            ctx.arrays[f"probe_{a}"] = probs
            save_weights(probe.model, ctx.weights_dir / f"probe_{a}.safetensors")
        return {"attributes": out}
