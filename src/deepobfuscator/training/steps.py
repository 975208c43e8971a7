"""One optimisation step of each kind. Each step updates exactly one group of networks.

Networks that a step does not update run in eval mode and receive no optimizer
step, so neither their weights nor their BatchNorm statistics move.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Protocol, cast

import torch
from torch import nn

from ..config import Config
from ..models import Models, reinit_attackers
from ..privacy import (
    MSSSIMSettings,
    bce_logits,
    distance_correlation,
    entropy_privacy,
    neg_ce_privacy,
    reconstruction_loss,
)
from ..tasks import task_set


@dataclass
class Batch:
    x: torch.Tensor  # (B, 3, H, W) in [0, 1]
    task: torch.Tensor  # (B, T) float: each task's label (0/1, or a class index)
    private: torch.Tensor  # (B, K) float 0/1, columns in cfg.data.private order


@dataclass
class StepContext:
    cfg: Config
    models: Models
    optimizers: dict[str, torch.optim.Optimizer]
    msssim: MSSSIMSettings
    noise: torch.Tensor  # (3, H, W): the fixed target of the noise step
    amp: Callable[[], AbstractContextManager] = nullcontext  # forward-pass precision
    # train.balance_tasks: each task's log prior (TaskSet.log_priors); None: a plain loss
    task_priors: list[torch.Tensor] | None = None
    # called after each backward pass with the optimizers about to step (data-parallel
    # training averages gradients over processes here; see training/distributed.py)
    sync_grads: Callable[[list[torch.optim.Optimizer]], None] | None = None


def task_loss(ctx: StepContext, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The cloud's loss over every task (tasks.py), logit-adjusted when configured."""
    return task_set(ctx.cfg).loss(logits, labels, ctx.task_priors)


def _modes(models: Models, train: set[str]) -> None:
    for name, module in models.named().items():
        module.train(name in train)


def _update(ctx: StepContext, opt_name: str, loss: torch.Tensor) -> None:
    for m in ctx.models.named().values():
        m.zero_grad(set_to_none=True)
    loss.backward()
    if ctx.sync_grads is not None:
        ctx.sync_grads([ctx.optimizers[opt_name]])
    ctx.optimizers[opt_name].step()


def _adversaries_loss(ctx: StepContext, z: torch.Tensor, batch: Batch) -> torch.Tensor:
    return cast(torch.Tensor, sum(bce_logits(adv(z), batch.private[:, k])
                                  for k, adv in enumerate(ctx.models.adversaries.values())))


def _dcor_term(ctx: StepContext, batch: Batch, z: torch.Tensor) -> torch.Tensor | None:
    """NoPeek's leakage penalty, weighted; None when the option is off."""
    w = ctx.cfg.privacy.dcor_weight
    return w * distance_correlation(batch.x, z) if w > 0 else None


class _Noisy(Protocol):
    noise_std: float  # an Obfuscator's feature-noise std


@contextmanager
def scaled_noise(encoder: _Noisy, fraction: float) -> Iterator[None]:
    """E's feature noise at `fraction` of its std inside the block, the full std after."""
    full = encoder.noise_std
    encoder.noise_std = full * fraction
    try:
        yield
    finally:
        encoder.noise_std = full


def task_step(ctx: StepContext, batch: Batch) -> dict[str, float]:
    """Stage 1: E and C learn the task (plus NoPeek's penalty when dcor_weight > 0)."""
    _modes(ctx.models, {"encoder", "classifier"})
    with ctx.amp():
        z = ctx.models.encoder(batch.x)
        logits = ctx.models.classifier(z)
    loss = task_loss(ctx, logits, batch.task)
    out = {"task_loss": loss.item()}
    if (dcor := _dcor_term(ctx, batch, z)) is not None:
        loss = loss + dcor
        out["dcor"] = dcor.item()
    _update(ctx, "encoder_classifier", loss)
    return out


def reconstructor_step(ctx: StepContext, batch: Batch) -> dict[str, float]:
    """Stage 2: R learns to invert the frozen E (1 - MS-SSIM)."""
    _modes(ctx.models, {"reconstructor"})
    with torch.no_grad(), ctx.amp():
        z = ctx.models.encoder(batch.x)
    with ctx.amp():
        recon = ctx.models.reconstructor(z)
    loss = reconstruction_loss(recon, batch.x, ctx.msssim)
    _update(ctx, "reconstructor", loss)
    return {"recon_loss": loss.item()}


def adversaries_step(ctx: StepContext, batch: Batch) -> dict[str, float]:
    """Stage 3 (and the rotation's adversary step): R and every P learn from frozen E."""
    _modes(ctx.models, {n for n in ("reconstructor", "adversaries") if n in ctx.optimizers})
    with torch.no_grad(), ctx.amp():
        z = ctx.models.encoder(batch.x)
    losses = {}
    total = torch.zeros((), device=batch.x.device)
    if "reconstructor" in ctx.optimizers:
        with ctx.amp():
            recon = ctx.models.reconstructor(z)
        r1 = reconstruction_loss(recon, batch.x, ctx.msssim)
        total = total + r1
        losses["recon_loss"] = r1.item()
    if len(ctx.models.adversaries):
        with ctx.amp():
            p = _adversaries_loss(ctx, z, batch)
        total = total + p
        losses["adversary_loss"] = p.item()
    for m in ctx.models.named().values():
        m.zero_grad(set_to_none=True)
    total.backward()
    stepping = [ctx.optimizers[n] for n in ("reconstructor", "adversaries")
                if n in ctx.optimizers]
    if ctx.sync_grads is not None:
        ctx.sync_grads(stepping)
    for opt in stepping:
        opt.step()
    return losses


def classifier_step(ctx: StepContext, batch: Batch) -> dict[str, float]:
    """C alone learns the task from the frozen E: the rotation's classifier step (C follows
    the changing features), and the re-fit to a sparse upload once it is chosen
    (train.upload_tune_epochs; no uploaded number changes)."""
    _modes(ctx.models, {"classifier"})
    with torch.no_grad(), ctx.amp():
        z = ctx.models.encoder(batch.x)
    with ctx.amp():
        logits = ctx.models.classifier(z)
    loss = task_loss(ctx, logits, batch.task)
    _update(ctx, "classifier", loss)
    return {"task_loss": loss.item()}


def encoder_step(ctx: StepContext, batch: Batch, kind: str, lam: float) -> dict[str, float]:
    """The rotation's obfuscator steps; E minimises  C_loss + lam * privacy term, where

    noise:          R2 = 1 - MS-SSIM(R(E(x)), n)   pull reconstructions toward fixed noise
    reconstruction: -R1 = MS-SSIM(R(E(x)), x) - 1  push reconstructions away from x
    attribute:      sum over private attributes of -BCE(P(E(x)), y) (neg_ce) or
                    log 2 - H(P(E(x))) (entropy: the adversary's output pushed to 1/2)
    """
    _modes(ctx.models, {"encoder"})
    p = ctx.cfg.privacy.paper
    with ctx.amp():
        z = ctx.models.encoder(batch.x)
        logits = ctx.models.classifier(z)
        recon = ctx.models.reconstructor(z) if kind in ("noise", "reconstruction") else None
        adv_logits = ([adv(z) for adv in ctx.models.adversaries.values()]
                      if kind == "attribute" else [])
    c_loss = task_loss(ctx, logits, batch.task)
    if kind == "noise":
        assert recon is not None  # built above for this kind
        priv = p.reconstruction_weight * reconstruction_loss(
            recon, ctx.noise.expand_as(recon), ctx.msssim)
    elif kind == "reconstruction":
        assert recon is not None
        priv = -p.reconstruction_weight * reconstruction_loss(recon, batch.x, ctx.msssim)
    elif kind == "attribute":
        terms: list[torch.Tensor] = []
        for k, a_logits in enumerate(adv_logits):
            terms.append(neg_ce_privacy(a_logits, batch.private[:, k])
                         if p.attribute_loss == "neg_ce" else entropy_privacy(a_logits))
        priv = (p.attribute_weight * cast(torch.Tensor, sum(terms)) if terms
                else torch.zeros((), device=z.device))
    else:
        raise ValueError(f"unknown encoder step {kind!r}")
    loss = c_loss + lam * priv
    out = {"task_loss": c_loss.item(), f"{kind}_privacy": priv.item()}
    if (dcor := _dcor_term(ctx, batch, z)) is not None:
        loss = loss + dcor
        out["dcor"] = dcor.item()
    _update(ctx, "encoder", loss)
    return out


def rotation_step(ctx: StepContext, batch: Batch, step: str, lam: float) -> dict[str, float]:
    if step in ("noise", "reconstruction", "attribute"):
        return encoder_step(ctx, batch, step, lam)
    if step == "adversaries":
        return adversaries_step(ctx, batch)
    if step == "classifier":
        return classifier_step(ctx, batch)
    raise ValueError(f"unknown rotation step {step!r}")


def maybe_refresh_attackers(ctx: StepContext, epoch: int, lr: float) -> bool:
    """Adversary refresh: at the start of every `privacy.paper.adversary_refresh`-th adversarial
    epoch, P and R restart from fresh weights and fresh optimizers, so the obfuscator
    must hide from attackers it has never seen rather than from one it has learnt to fool."""
    k = ctx.cfg.privacy.paper.adversary_refresh
    if k <= 0 or epoch == 0 or epoch % k:
        return False
    reinit_attackers(ctx.models)
    fresh = make_optimizers(ctx.models, "adversarial", lr)
    for name in ("reconstructor", "adversaries"):
        if name in fresh:
            ctx.optimizers[name] = fresh[name]
    return True


def lambda_at(cfg: Config, epoch: int) -> float:
    """Privacy weight for an adversarial epoch: constant up to `lambda_decay_after`,
    then linear to 0 at the end. With 20 epochs and decay after 10 this is the
    paper's 10, ..., 10, 9, ..., 1."""
    p, total = cfg.privacy.paper, cfg.train.adversarial.epochs
    if epoch <= p.lambda_decay_after or total <= p.lambda_decay_after:
        return p.lambda_
    return p.lambda_ * (total - epoch) / (total - p.lambda_decay_after)


def cosine_fraction(epoch: int, batch: int, n_batches: int, epochs: int) -> float:
    """The cosine schedule's share of the base learning rate at this step of a stage: 1 at
    its first step, falling towards 0 at its last."""
    t = (epoch * n_batches + batch) / max(1, epochs * n_batches)
    return 0.5 * (1.0 + math.cos(math.pi * t))


def set_lr_fraction(optimizers: dict[str, torch.optim.Optimizer], fraction: float) -> None:
    """Every group's learning rate to `fraction` of its base: its lr when first seen here,
    unscaled then (a fresh optimizer, even one made mid-stage by a refresh); a checkpoint's
    optimizer state keeps the base."""
    for opt in optimizers.values():
        for group in opt.param_groups:
            group["lr"] = group.setdefault("base_lr", group["lr"]) * fraction


def make_optimizers(models: Models, stage: str, lr: float) -> dict[str, torch.optim.Optimizer]:
    """Fresh Adam optimizers for the networks a stage updates."""

    def adam(*modules: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.Adam([q for m in modules for q in m.parameters()], lr=lr)

    if stage == "task":
        return {"encoder_classifier": adam(models.encoder, models.classifier)}
    if stage == "reconstructor":
        return {"reconstructor": adam(models.reconstructor)}
    if stage == "adversaries":
        return {"adversaries": adam(models.adversaries)} if len(models.adversaries) else {}
    if stage == "adversarial":
        opts = {"encoder": adam(models.encoder), "classifier": adam(models.classifier),
                "reconstructor": adam(models.reconstructor)}
        if len(models.adversaries):
            opts["adversaries"] = adam(models.adversaries)
        return opts
    raise ValueError(f"unknown stage {stage!r}")
