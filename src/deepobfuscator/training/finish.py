"""The finish phase: what happens between the last training stage and the final weights.

Its plan is read from the config, never from the weights: first every enabled defence
that fits something when training ends, in their fit order (defences/: the sparse upload
chooses its positions, then the erasure is fitted to the numbers sent), then the cloud
re-fits to what the phone now sends (train.upload_tune_epochs; the phone is frozen) when
any fit changed the upload or train.refit_cloud asks for it.

It runs after the last checkpoint (the end-of-training state) and is a pure function of
it: every fit is a function of the trained obfuscator and the defender's training images,
and the re-fit of the checkpoint's RNG state and a batch order of its own. So a resumed
run repeats it exactly, and `choose-upload` (training/reuse.py) runs the same phase with
another plan on the same checkpoint, without retraining anything. What each step did is
recorded in the run: run.json `finish` and the `upload` record of metrics.jsonl.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from ..config import Config, StageConfig
from ..defences import FitContext, finish_fits
from ..log import log
from ..precision import autocast
from .distributed import Dist
from .steps import Batch, StepContext, classifier_step


class FinishHost(Protocol):
    """What the finish phase needs of the trainer (trainer._Loop): the run's config and
    models restored to the end of training, the defender's training data, and the
    trainer's batch stream, precision and data-parallel state."""

    cfg: Config
    models: Any  # models.Models
    images: torch.Tensor
    task: torch.Tensor
    task_priors: list[torch.Tensor] | None
    private: torch.Tensor
    msssim: Any
    noise: torch.Tensor
    precision: str
    device: torch.device
    sync: Any
    d: Dist
    progress: bool
    timings: dict[str, float]

    @property
    def stages(self) -> Sequence[str]: ...

    def order(self, scfg: Any, s_idx: int, epoch: int, stream: int = 0) -> Any: ...

    def batch(self, order: Any, per: int, b: int) -> Batch: ...

CLOUD_STEP = "cloud"


@dataclass(frozen=True)
class FinishPlan:
    """The steps of a finish phase, in order: defence fits, then the cloud's re-fit."""

    fits: tuple[str, ...] = ()  # defence names, in their fit order
    refit_cloud: bool = False

    @property
    def steps(self) -> list[str]:
        return [*self.fits, *([CLOUD_STEP] if self.refit_cloud else [])]

    def __bool__(self) -> bool:
        return bool(self.steps)


def finish_plan(cfg: Config, refit_mark: bool = False) -> FinishPlan:
    """The config's plan. `refit_mark`: a checkpoint of a run from before
    train.refit_cloud existed asked for the re-fit itself."""
    fits = tuple(d.name for d in finish_fits(cfg))
    refit = (bool(fits) or cfg.train.refit_cloud or refit_mark) \
        and cfg.train.upload_tune_epochs > 0
    return FinishPlan(fits, refit)


@dataclass
class FinishRecord:
    """What the phase did: one entry per step, for run.json and metrics.jsonl."""

    plan: list[str]
    steps: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"plan": self.plan, "steps": self.steps}


def run_finish(loop: FinishHost, plan: FinishPlan) -> FinishRecord | None:
    """Run `plan` on the trainer's models (restored to the end of training); None when
    the plan is empty."""
    if not plan:
        return None
    cfg, encoder = loop.cfg, loop.models.encoder
    record = FinishRecord(plan.steps)
    ctx = FitContext(cfg, encoder, loop.images, loop.task, loop.private)
    by_name = {d.name: d for d in finish_fits(cfg)}
    for name in plan.fits:
        defence = by_name[name]
        stage = encoder.stage(name)
        record.steps[defence.finish_step or name] = defence.fit(stage, ctx)
    erased = record.steps.get("erasure", {})
    if erased.get("nothing_erased") and loop.d.is_main:
        log.warning(f"privacy.erase={cfg.privacy.erase}: the upload does not move with them "
                    "inside the task classes on the defender's images (or they never vary "
                    "there): nothing was erased")
    if plan.refit_cloud:
        record.steps[CLOUD_STEP] = refit_cloud(loop)
    return record


def refit_cloud(loop: FinishHost) -> dict[str, float]:
    """C alone re-fits the task to the upload for train.upload_tune_epochs (E frozen), on
    the batch order of the stage index after the last. Returns its mean loss."""
    t = loop.cfg.train
    s_idx = len(loop.stages)
    scfg = StageConfig(epochs=t.upload_tune_epochs, lr=t.upload_tune_lr,
                       batch_size=t.adversarial.batch_size)
    opt = torch.optim.Adam(loop.models.classifier.parameters(), lr=scfg.lr)
    ctx = StepContext(loop.cfg, loop.models, {"classifier": opt}, loop.msssim, loop.noise,
                      amp=lambda: autocast(loop.precision, loop.device),
                      task_priors=loop.task_priors, sync_grads=loop.sync)
    total, count = 0.0, 0
    t0 = time.time()
    for epoch in range(scfg.epochs):
        order, per, n_batches = loop.order(scfg, s_idx, epoch)
        for b in tqdm(range(n_batches), desc=f"cloud re-fit {epoch + 1}/{scfg.epochs}",
                      unit="batch", leave=False, disable=not loop.progress, mininterval=1.0):
            total += classifier_step(ctx, loop.batch(order, per, b))["task_loss"]
            count += 1
    loop.timings["upload"] = loop.timings.get("upload", 0.0) + time.time() - t0
    return {"tune_task_loss": round(total / max(count, 1), 5)}


def history_record(cfg: Config, record: FinishRecord) -> dict[str, Any]:
    """The finish phase's line of metrics.jsonl (before its validation figures)."""
    from ..defences import sent_positions

    out: dict[str, Any] = {"stage": "upload", "epoch": 0,
                           "upload_positions": sent_positions(cfg)}
    if cfg.privacy.erase:
        out["erased"] = list(cfg.privacy.erase)
    out.update(record.steps.get(CLOUD_STEP, {}))
    return out
