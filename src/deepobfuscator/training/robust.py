"""`privacy.method=robust`: adversarial obfuscation built to hold against fresh attackers.

The paper's game lets the obfuscator E beat one stale, weak adversary and nobody else
(docs/results.md). Here every ingredient the literature and our measurements tie to
privacy against *fresh* attackers is a config key under `privacy.robust`:

- strong, current attackers: `adversary_steps` updates of the attackers, each on its own
  fresh batch, before every encoder step, at their own learning rate; the attackers are
  the audit's architectures behind a standardising layer, in training mode whenever they
  run (attackers.py), so E cannot game stale BatchNorm statistics;
- an ensemble (`ensemble` per attribute), one member re-initialised every epoch and
  trained `refresh_steps` steps before E sees it;
- bounded objectives: the attributes' adversaries pushed to an uninformed answer (maximum
  entropy, or a balanced cross-entropy capped at chance), reconstructions pushed toward
  the mean face and never past it (a reconstruction anti-correlated with the face still
  carries the face);
- the cloud classifier C trained in the same step as E, so it never lags;
- optionally (`info_weight`), an InfoNCE term through two critics trained with E that keeps
  what tells photos apart while the adversaries remove the named attributes (TIPRDC, MaSS;
  models/critics.py).

The information cap (privacy.normalize_features + privacy.feature_noise) lives in the
obfuscator itself (models/split.py), so it also holds on the phone and in the export.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, ClassVar, cast

import torch
import torch.nn.functional as F

from ..config import Config
from ..methods import PrivacyMethod, Stage, StepFn, register_method
from ..models import Models
from ..models.attackers import Ensemble, reinit_member
from ..privacy import entropy_privacy, ms_ssim
from .steps import Batch, StepContext, _modes, _update, task_loss

_LOG2 = math.log(2.0)


def balanced_bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean of the per-class mean cross-entropies: log 2 for an uninformed answer of 1/2
    whatever the class balance, so the attacker cannot score by guessing the majority."""
    y = labels.float()
    per = F.binary_cross_entropy_with_logits(logits.float(), y, reduction="none")
    pos, neg = y.sum(), (1 - y).sum()
    terms = [(per * w).sum() / n for w, n in ((y, pos), (1 - y, neg)) if n > 0]
    return cast(torch.Tensor, sum(terms)) / len(terms)


def _ensembles(models: Models) -> Iterable[Ensemble]:
    """The adversaries as this method builds them (robust_attackers): one Ensemble per
    private attribute."""
    return cast("Iterable[Ensemble]", models.adversaries.values())


def attacker_loss(ctx: StepContext, z: torch.Tensor,
                  batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
    """What the attackers minimise: every ensemble member's balanced CE on its attribute,
    and the decoder's 1 - MS-SSIM + L1 (the audit's inverse-network loss)."""
    r = ctx.cfg.privacy.robust
    out: dict[str, float] = {}
    total = torch.zeros((), device=z.device)
    with ctx.amp():
        for k, ens in enumerate(_ensembles(ctx.models)):
            ce = cast(torch.Tensor, sum(balanced_bce(lg, batch.private[:, k])
                                        for lg in ens.each(z)))
            total = total + ce
            out[f"adv_{k}_ce"] = ce.item() / len(ens.members)
        if r.reconstruction_weight > 0:
            recon = ctx.models.reconstructor(z).float()
            rl = (1 - ms_ssim(recon, batch.x.float(), ctx.msssim)) + F.l1_loss(recon, batch.x)
            total = total + rl
            out["decoder_loss"] = rl.item()
    return total, out


def attacker_step(ctx: StepContext, batch: Batch) -> dict[str, float]:
    """One update of every attacker on features of the frozen E (as deployed: eval mode)."""
    _modes(ctx.models, {"adversaries", "reconstructor"})
    with torch.no_grad(), ctx.amp():
        z = ctx.models.encoder(batch.x).float()
    loss, out = attacker_loss(ctx, z, batch)
    _update(ctx, "attackers", loss)
    return out


@contextmanager
def _frozen(*modules: torch.nn.Module) -> Iterator[None]:
    """No weight gradients for `modules` (inputs still get theirs): E's step reads the
    attackers but never updates them, and their weight gradients cost ~12% of the step."""
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def encoder_step(ctx: StepContext, batch: Batch, mean_face: torch.Tensor) -> dict[str, float]:
    """E and C together minimise  task BCE + w_a * attribute term + w_r * reconstruction term
    (+ w_i * InfoNCE(z, x), the critics f and g learning with them, when info_weight > 0).

    attribute term: mean over attributes and members of  log 2 - H(P(z))  (entropy) or
    relu(log 2 - balanced CE)  (capped_ce); both are 0 for an uninformed attacker and
    give no reward beyond it.
    reconstruction term: mean over images of relu(MS-SSIM(R(z), x) - MS-SSIM(mean face, x)).
    The attackers run in training mode (batch statistics) and are not updated here.
    """
    with _frozen(ctx.models.adversaries, ctx.models.reconstructor):
        return _encoder_step(ctx, batch, mean_face)


def _encoder_step(ctx: StepContext, batch: Batch, mean_face: torch.Tensor) -> dict[str, float]:
    r = ctx.cfg.privacy.robust
    _modes(ctx.models, {"encoder", "classifier", "adversaries", "reconstructor", "critics"})
    with ctx.amp():
        z = ctx.models.encoder(batch.x)
        c_loss = task_loss(ctx, ctx.models.classifier(z), batch.task)
    loss, out = c_loss, {"task_loss": c_loss.item()}
    if r.attribute_weight > 0 and len(ctx.models.adversaries):
        terms = []
        with ctx.amp():
            for k, ens in enumerate(_ensembles(ctx.models)):
                for lg in ens.each(z):
                    if r.attribute_loss == "entropy":
                        terms.append(entropy_privacy(lg))
                    else:
                        terms.append(F.relu(_LOG2 - balanced_bce(lg, batch.private[:, k])))
        attr = torch.stack(terms).mean()
        loss = loss + r.attribute_weight * attr
        out["attribute_privacy"] = attr.item()
    if r.reconstruction_weight > 0:
        with ctx.amp():
            recon = ctx.models.reconstructor(z).float()
        x = batch.x.float()
        got = ms_ssim(recon, x, ctx.msssim, reduction="none")
        with torch.no_grad():
            floor = ms_ssim(mean_face.expand_as(x), x, ctx.msssim, reduction="none")
        rec = F.relu(got - floor).mean()
        loss = loss + r.reconstruction_weight * rec
        out["reconstruction_privacy"] = rec.item()
    if r.info_weight > 0 and ctx.models.critics is not None:
        # under torchrun each rank's negatives are its own slice of the batch
        with ctx.amp():
            info = ctx.models.critics(z, batch.x, r.info_temperature)
        loss = loss + r.info_weight * info
        out["info_loss"] = info.item()
    _update(ctx, "encoder_classifier", loss)
    return out


def robust_step(ctx: StepContext, batch: Batch, fresh: list[Batch],
                mean_face: torch.Tensor) -> dict[str, float]:
    """k attacker updates on the fresh batches, then one encoder+classifier update."""
    out: dict[str, float] = {}
    for fb in fresh:
        out.update(attacker_step(ctx, fb))
    out.update(encoder_step(ctx, batch, mean_face))
    return out


def refresh_member(ctx: StepContext, models: Models, epoch: int) -> int | None:
    """At adversarial epoch e >= 1: member e mod ensemble of every attribute restarts from
    fresh weights and a fresh optimizer state. Returns the member index (None: no refresh).
    The caller then trains the attackers `refresh_steps` steps before E moves."""
    r = ctx.cfg.privacy.robust
    if epoch == 0 or r.refresh_steps <= 0 or not len(models.adversaries):
        return None
    index = epoch % r.ensemble
    from ..models import feature_shape

    shape = feature_shape(ctx.cfg)
    for ens in _ensembles(models):
        reinit_member(ens, index, shape, ctx.optimizers.get("attackers"))
    return index


def robust_optimizers(models: Models, stage: str, lr: float, adversary_lr: float
                      ) -> dict[str, torch.optim.Optimizer]:
    attackers = torch.optim.Adam(
        [*models.adversaries.parameters(), *models.reconstructor.parameters()], lr=adversary_lr)
    if stage == "adversaries":
        return {"attackers": attackers}
    groups: list[dict[str, Any]] = [
        {"params": [*models.encoder.parameters(), *models.classifier.parameters()]}]
    if models.critics is not None:
        # The critics share E's objective (they cooperate with it, unlike the attackers),
        # so they step in E's own update, at its learning rate and schedule, and their
        # moments are checkpointed with it; a second group leaves group 0, and so the
        # optimizer state of runs without the term, as it was.
        groups.append({"params": list(models.critics.parameters())})
    ec = torch.optim.Adam(groups, lr=lr)
    return {"encoder_classifier": ec, "attackers": attackers}


@register_method
class RobustGame(PrivacyMethod):
    """After the task stage: adversaries (the attackers pre-trained on the task-trained E),
    then the game (k attacker steps on fresh batches, then one step of E and C together).
    Its step-matched control (no attacker steps, no privacy terms) trains the task and the
    continuation only."""

    name = "robust"
    summary = ("strong, current attackers (k steps, ensemble, refresh), bounded objectives, "
               "C trained with E")
    reads: ClassVar[tuple[str, ...]] = ("privacy.robust", "train.adversaries",
                                        "train.adversarial")
    attackers = "robust"

    def trains_attackers(self, cfg: Config) -> bool:
        r = cfg.privacy.robust
        return r.adversary_steps > 0 or r.attribute_weight > 0 or r.reconstruction_weight > 0

    def stages(self, cfg: Config) -> tuple[Stage, ...]:
        return ("task", "adversaries", "adversarial") if self.trains_attackers(cfg) else \
            ("task", "adversarial")

    def optimizers(self, models: Models, stage: Stage, lr: float, cfg: Config) -> dict:
        return robust_optimizers(models, stage, lr, cfg.privacy.robust.adversary_lr)

    def refresh(self, loop: Any, ctx: StepContext, s_idx: int, epoch: int, scfg: Any) -> bool:
        if not self.trains_attackers(ctx.cfg) or refresh_member(ctx, ctx.models, epoch) is None:
            return False
        # the new member trains before the encoder sees it, on its own batch order
        loop.broadcast_models()
        order, per, n_batches = loop.order(scfg, s_idx, epoch, 2)
        for j in range(ctx.cfg.privacy.robust.refresh_steps):
            attacker_step(ctx, loop.batch(order, per, j % n_batches))
        return True

    def epoch_steps(self, loop: Any, ctx: StepContext, stage: Stage, s_idx: int, epoch: int,
                    scfg: Any) -> StepFn:
        # the step functions are looked up in this module per step, so a test can wrap one
        if stage == "adversaries":
            return lambda b, batch: attacker_step(ctx, batch)
        if stage != "adversarial":
            return super().epoch_steps(loop, ctx, stage, s_idx, epoch, scfg)
        k = ctx.cfg.privacy.robust.adversary_steps
        fresh_order, per, n_batches = loop.order(scfg, s_idx, epoch, 1)

        def step(b: int, batch: Batch) -> dict[str, float]:
            # k attacker updates, each on its own fresh batch, then E and C
            fresh = [loop.batch(fresh_order, per, (b * k + j) % n_batches) for j in range(k)]
            return robust_step(ctx, batch, fresh, loop.mean_face)

        return step


@register_method
class TaskContinuation(RobustGame):
    """The task stage, then the task alone for the adversarial stage's epochs: step for
    step what `robust` trains with its attackers off (no attacker steps, no privacy
    terms), so it is the adversarial methods' step-matched control and, with the
    information cap, the default's method."""

    name = "task-continuation"
    summary = ("the task, then the task alone as long as a game: the step-matched control; "
               "privacy from the split and the cap")
    reads = ("train.adversarial",)

    def trains_attackers(self, cfg: Config) -> bool:
        return False

    def refresh(self, loop: Any, ctx: StepContext, s_idx: int, epoch: int, scfg: Any) -> bool:
        return False

    def epoch_steps(self, loop: Any, ctx: StepContext, stage: Stage, s_idx: int, epoch: int,
                    scfg: Any) -> StepFn:
        # the game's own step with every attacker ingredient off, whatever privacy.robust
        # says (it is not this method's key)
        r = replace(ctx.cfg.privacy.robust, adversary_steps=0, attribute_weight=0.0,
                    reconstruction_weight=0.0, info_weight=0.0)
        off = replace(ctx.cfg, privacy=replace(ctx.cfg.privacy, robust=r))
        return super().epoch_steps(loop, replace(ctx, cfg=off), stage, s_idx, epoch, scfg)
