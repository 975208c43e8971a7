"""`privacy.method=robust`: adversarial obfuscation built to hold against fresh attackers.

Stages: task; adversaries (the attackers pre-trained on the task-trained E); adversarial
(k attacker steps on fresh batches, then one step of E and C together). Its step-matched
control (no attacker steps, no privacy terms) trains the task and the continuation only.
The game's steps and why each part is there: training/robust.py and docs/robust.md.
"""

from __future__ import annotations

from typing import Any

from . import PrivacyMethod, Stage, StepFn, register_method


@register_method
class RobustGame(PrivacyMethod):
    name = "robust"
    summary = ("strong, current attackers (k steps, ensemble, refresh), bounded objectives, "
               "C trained with E")
    reads = ("privacy.robust", "train.adversaries", "train.adversarial")
    attackers = "robust"

    def trains_attackers(self, cfg) -> bool:
        r = cfg.privacy.robust
        return r.adversary_steps > 0 or r.attribute_weight > 0 or r.reconstruction_weight > 0

    def stages(self, cfg) -> tuple[Stage, ...]:
        return ("task", "adversaries", "adversarial") if self.trains_attackers(cfg) else \
            ("task", "adversarial")

    def optimizers(self, models, stage: Stage, lr: float, cfg):
        if stage == "task":
            return super().optimizers(models, stage, lr, cfg)
        from ..training.robust import robust_optimizers

        return robust_optimizers(models, stage, lr, cfg.privacy.robust.adversary_lr)

    def refresh(self, loop: Any, ctx, s_idx: int, epoch: int, scfg: Any) -> bool:
        from ..training.robust import attacker_step, refresh_member

        if not self.trains_attackers(ctx.cfg) or refresh_member(ctx, ctx.models, epoch) is None:
            return False
        # the new member trains before the encoder sees it, on its own batch order
        loop.broadcast_models()
        order, per, n_batches = loop.order(scfg, s_idx, epoch, 2)
        for j in range(ctx.cfg.privacy.robust.refresh_steps):
            attacker_step(ctx, loop.batch(order, per, j % n_batches))
        return True

    def epoch_steps(self, loop: Any, ctx, stage: Stage, s_idx: int, epoch: int,
                    scfg: Any) -> StepFn:
        from ..training.robust import attacker_step, robust_step

        if stage == "adversaries":
            return lambda b, batch: attacker_step(ctx, batch)
        if stage != "adversarial":
            return super().epoch_steps(loop, ctx, stage, s_idx, epoch, scfg)
        k = ctx.cfg.privacy.robust.adversary_steps
        fresh_order, per, n_batches = loop.order(scfg, s_idx, epoch, 1) if k else (None, 0, 1)

        def step(b: int, batch):
            # k attacker updates, each on its own fresh batch, then E and C
            fresh = [loop.batch(fresh_order, per, (b * k + j) % n_batches) for j in range(k)]
            return robust_step(ctx, batch, fresh, loop.mean_face)

        return step
