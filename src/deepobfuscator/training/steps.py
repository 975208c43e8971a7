"""One optimisation step of each kind. Each step updates exactly one group of networks.

Networks that a step does not update run in eval mode and receive no optimizer
step, so neither their weights nor their BatchNorm statistics move.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from ..config import Config
from ..models import Models
from ..privacy import (
    MSSSIMSettings,
    bce_logits,
    entropy_privacy,
    neg_ce_privacy,
    reconstruction_loss,
)


@dataclass
class Batch:
    x: torch.Tensor  # (B, 3, H, W) in [0, 1]
    task: torch.Tensor  # (B,) float 0/1
    private: torch.Tensor  # (B, K) float 0/1, columns in cfg.data.private order


@dataclass
class StepContext:
    cfg: Config
    models: Models
    optimizers: dict[str, torch.optim.Optimizer]
    msssim: MSSSIMSettings
    noise: torch.Tensor  # (3, H, W): the fixed target of the noise step
    amp: Callable[[], AbstractContextManager] = nullcontext  # forward-pass precision


def _modes(models: Models, train: set[str]) -> None:
    for name, module in models.named().items():
        module.train(name in train)


def _update(ctx: StepContext, opt_name: str, loss: torch.Tensor) -> None:
    for m in ctx.models.named().values():
        m.zero_grad(set_to_none=True)
    loss.backward()
    ctx.optimizers[opt_name].step()


def _adversaries_loss(ctx: StepContext, z: torch.Tensor, batch: Batch) -> torch.Tensor:
    return sum(bce_logits(adv(z), batch.private[:, k])
               for k, adv in enumerate(ctx.models.adversaries.values()))


def task_step(ctx: StepContext, batch: Batch) -> dict[str, float]:
    """Stage 1: E and C learn the task."""
    _modes(ctx.models, {"encoder", "classifier"})
    with ctx.amp():
        logits = ctx.models.classifier(ctx.models.encoder(batch.x))
    loss = bce_logits(logits, batch.task)
    _update(ctx, "encoder_classifier", loss)
    return {"task_loss": loss.item()}


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
    for name in ("reconstructor", "adversaries"):
        if name in ctx.optimizers:
            ctx.optimizers[name].step()
    return losses


def classifier_step(ctx: StepContext, batch: Batch) -> dict[str, float]:
    """The rotation's classifier step: C follows the changing features."""
    _modes(ctx.models, {"classifier"})
    with torch.no_grad(), ctx.amp():
        z = ctx.models.encoder(batch.x)
    with ctx.amp():
        logits = ctx.models.classifier(z)
    loss = bce_logits(logits, batch.task)
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
    p = ctx.cfg.privacy
    with ctx.amp():
        z = ctx.models.encoder(batch.x)
        logits = ctx.models.classifier(z)
        recon = ctx.models.reconstructor(z) if kind in ("noise", "reconstruction") else None
        adv_logits = ([adv(z) for adv in ctx.models.adversaries.values()]
                      if kind == "attribute" else [])
    c_loss = bce_logits(logits, batch.task)
    if kind == "noise":
        priv = p.reconstruction_weight * reconstruction_loss(
            recon, ctx.noise.expand_as(recon), ctx.msssim)
    elif kind == "reconstruction":
        priv = -p.reconstruction_weight * reconstruction_loss(recon, batch.x, ctx.msssim)
    elif kind == "attribute":
        terms = []
        for k, a_logits in enumerate(adv_logits):
            terms.append(neg_ce_privacy(a_logits, batch.private[:, k])
                         if p.attribute_loss == "neg_ce" else entropy_privacy(a_logits))
        priv = p.attribute_weight * sum(terms) if terms else torch.zeros((), device=z.device)
    else:
        raise ValueError(f"unknown encoder step {kind!r}")
    loss = c_loss + lam * priv
    _update(ctx, "encoder", loss)
    return {"task_loss": c_loss.item(), f"{kind}_privacy": priv.item()}


def rotation_step(ctx: StepContext, batch: Batch, step: str, lam: float) -> dict[str, float]:
    if step in ("noise", "reconstruction", "attribute"):
        return encoder_step(ctx, batch, step, lam)
    if step == "adversaries":
        return adversaries_step(ctx, batch)
    if step == "classifier":
        return classifier_step(ctx, batch)
    raise ValueError(f"unknown rotation step {step!r}")


def lambda_at(cfg: Config, epoch: int) -> float:
    """Privacy weight for an adversarial epoch: constant up to `lambda_decay_after`,
    then linear to 0 at the end. With 20 epochs and decay after 10 this is the
    paper's 10, ..., 10, 9, ..., 1."""
    p, total = cfg.privacy, cfg.train.adversarial.epochs
    if epoch <= p.lambda_decay_after or total <= p.lambda_decay_after:
        return p.lambda_
    return p.lambda_ * (total - epoch) / (total - p.lambda_decay_after)


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
