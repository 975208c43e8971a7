"""`privacy.method=deepobfuscator`: the paper's four stages, reproduced as published.

After the task stage: (2) reconstructor: R inverts the frozen E; (3) adversaries: one P
per private attribute on the frozen E (optionally started from the trained classifier);
(4) adversarial: the rotation of obfuscator, adversary and classifier steps
(`privacy.paper.rotation`) under the lambda schedule, with optional adversary refresh. The
steps are in steps.py.
"""

from __future__ import annotations

from typing import Any

from ..config import Config
from ..methods import PrivacyMethod, Stage, StepFn, register_method
from ..models import Models, init_adversaries_from_classifier
from . import steps


@register_method
class PaperRotation(PrivacyMethod):
    name = "deepobfuscator"
    summary = "the paper's four stages and adversarial rotation (faithful reproduction)"
    reads = ("privacy.paper", "train.reconstructor", "train.adversaries", "train.adversarial")

    def stages(self, cfg: Config) -> tuple[Stage, ...]:
        return ("task", "reconstructor", "adversaries", "adversarial")

    def trains_attackers(self, cfg: Config) -> bool:
        return True

    def optimizers(self, models: Models, stage: Stage, lr: float, cfg: Config) -> dict:
        return steps.make_optimizers(models, stage, lr)

    def begin_stage(self, cfg: Config, models: Models, stage: Stage) -> None:
        if stage == "adversaries" and cfg.privacy.paper.adversary_from_classifier:
            init_adversaries_from_classifier(models)

    def refresh(self, loop: Any, ctx: steps.StepContext, s_idx: int, epoch: int,
                scfg: Any) -> bool:
        return steps.maybe_refresh_attackers(ctx, epoch, scfg.lr)

    def epoch_steps(self, loop: Any, ctx: steps.StepContext, stage: Stage, s_idx: int,
                    epoch: int, scfg: Any) -> StepFn:
        # module attributes looked up per step, so a test can wrap one
        if stage == "reconstructor":
            return lambda b, batch: steps.reconstructor_step(ctx, batch)
        if stage == "adversaries":
            return lambda b, batch: steps.adversaries_step(ctx, batch)
        if stage == "adversarial":
            lam, rot = steps.lambda_at(ctx.cfg, epoch), ctx.cfg.privacy.paper.rotation
            return lambda b, batch: steps.rotation_step(ctx, batch, rot[b % len(rot)], lam)
        return super().epoch_steps(loop, ctx, stage, s_idx, epoch, scfg)

    def record(self, cfg: Config, stage: Stage, epoch: int) -> dict[str, float]:
        return {"lambda": steps.lambda_at(cfg, epoch)} if stage == "adversarial" else {}
