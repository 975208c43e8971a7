"""Fresh attribute probes: a CNN per attribute on the features (the task's too, and the
held-out attributes no model trained on: what a cloud could still learn later)."""

from __future__ import annotations

from ...attacks.attribute_probe import AttributeProbe, score_attribute
from ...attacks.base import FitResult
from ...metrics import finite_mean
from ..figures import FigureSpec
from . import AttackContext, AuditAttack, View, pick_view, register_attack
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
        FigureSpec("held_out_mean_auc", "Held-out attributes from features by fresh probes "
                   "(mean AUC)", "held-out mean AUC", ("held_out", "mean_auc"), "higher", 0.5,
                   section="utility", headline=True, held_out=True),
        FigureSpec("held_out:{attr}", "{attr} (held out) from features by a fresh probe (AUC)",
                   "{attr} (held out): probe AUC", ("attributes", "{attr}", "roc_auc"),
                   "higher", 0.5, per="held_out", section="utility"),
    )

    def run(self, ctx: AttackContext) -> dict:
        out = {}
        for a in ctx.attributes:
            def fit_one(view: View, a: str = a) -> tuple[AttributeProbe, FitResult]:
                probe = AttributeProbe(tuple(view.train.features.shape[1:]), ctx.fit)  # type: ignore[arg-type]
                return probe, probe.fit(view.train, a)

            def leak(view: View, probe: AttributeProbe, a: str = a) -> tuple[float, tuple]:
                probs = probe.infer(view.test)
                score = score_attribute(ctx.test.attributes[a], probs, probe.threshold)
                return score["balanced_accuracy"], (probs, score)

            _, probe, (probs, out[a]) = pick_view(ctx, f"probe_{a}", fit_one, leak)
            ctx.arrays[f"probe_{a}"] = probs
            save_weights(probe.model, ctx.weights_dir / f"probe_{a}.safetensors")
        held = [out[a]["roc_auc"] for a in ctx.cfg.data.held_out if a in out]
        return {"attributes": out,
                **({"held_out": {"mean_auc": finite_mean(held)}} if held else {})}
