"""Fresh attribute probes on the features, one per attribute and probe family (linear,
MLP, CNN): the private attributes, the task's (one binary task), and the held-out
attributes no model trained on (what a cloud could still learn later). Each attribute's
figure is the family that read it best on the test split (an audit reports the strongest
attacker it trained); every family's figures stay in `families`."""

from __future__ import annotations

import numpy as np

from ...attackers.attribute_probe import AttributeProbe, score_attribute
from ...attackers.base import FitResult
from ...errors import UserError
from ...metrics import finite_mean
from ...models.attack_nets import FAMILIES
from ..figures import FigureSpec
from . import AttackContext, AuditAttack, View, pick_view, register_attack
from ._weights import save_weights


def probe_families(text: str) -> tuple[str, ...]:
    """The audit setting `probe_families` ("linear,mlp,cnn") as a tuple, checked."""
    names = tuple(dict.fromkeys(f.strip() for f in text.split(",") if f.strip()))
    bad = [f for f in names if f not in FAMILIES]
    if bad or not names:
        raise UserError(f"probe_families={text!r}: name one or more of {', '.join(FAMILIES)}, "
                        "separated by commas")
    return names


@register_attack
class AttributeProbes(AuditAttack):
    name = "attributes"
    repeatable = True
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
        # each family on its own: which kind of reader a defence holds against
        *(FigureSpec(f"attribute_{fam}:{{attr}}", f"{{attr}}: {fam} probe balanced accuracy",
                     f"{{attr}}: {fam} probe", ("attributes", "{attr}", "families", fam,
                                                "balanced_accuracy"),
                     "lower", 0.5, per="private") for fam in FAMILIES),
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
        families = probe_families(ctx.settings.probe_families)
        out = {}
        for a in ctx.attributes:
            # held-out attributes are utility, read by AUC; the others by balanced accuracy
            metric = "roc_auc" if a in ctx.cfg.data.held_out else "balanced_accuracy"
            read: dict[str, tuple[AttributeProbe, np.ndarray, dict]] = {}
            for fam in families:
                def fit_one(view: View, fam: str = fam, a: str = a
                            ) -> tuple[AttributeProbe, FitResult]:
                    probe = AttributeProbe(tuple(view.train.features.shape[1:]),  # type: ignore[arg-type]
                                           ctx.fit, family=fam)
                    return probe, probe.fit(view.train, a)

                def leak(view: View, probe: AttributeProbe, a: str = a,
                         metric: str = metric) -> tuple[float, tuple]:
                    probs = probe.infer(view.test)
                    score = score_attribute(ctx.test.attributes[a], probs, probe.threshold)
                    return score[metric], (probs, score)

                # the CNN keeps the key it had before families existed (probe_<attr>)
                key = f"probe_{a}" if fam == "cnn" else f"probe_{a}:{fam}"
                _, probe, (probs, score) = pick_view(ctx, key, fit_one, leak)
                read[fam] = (probe, probs, score)
            best = max(families, key=lambda f: read[f][2][metric])  # ties: the first listed
            probe, probs, score = read[best]
            out[a] = {**score, "family": best, "families": {
                f: {k: read[f][2][k] for k in ("balanced_accuracy", "balanced_accuracy_tuned",
                                               "roc_auc")} for f in families}}
            ctx.arrays[f"probe_{a}"] = probs
            ctx.products.setdefault("probes", {})[a] = probs
            for fam, (p, _, _) in read.items():
                save_weights(p.model, ctx.weights_dir / (
                    f"probe_{a}.safetensors" if fam == "cnn" else f"probe_{a}_{fam}.safetensors"))
        held = [out[a]["roc_auc"] for a in ctx.cfg.data.held_out if a in out]
        return {"attributes": out,
                **({"held_out": {"mean_auc": finite_mean(held)}} if held else {})}
