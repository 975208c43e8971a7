"""Privacy methods (`privacy.method`): what training does beyond the task, one class each.

A method declares the stages it trains, the config keys only it reads, the attacker
networks it builds and whether it trains any, and supplies the optimizers and the step of
each of its stages; the trainer (training/trainer.py) runs whatever method the config
names through this interface and knows no method by name. Registered by name in
`METHODS`; a new method is one module with a `@register_method` class, its module in
`BUILTIN` below and its name in `config.PrivacyMethod` (which the config validates
against; a test keeps the two equal). docs/robust.md shows an example.

The feature-level defences (privacy.normalize_features + feature_noise: the information
cap; privacy.dcor_weight: NoPeek's penalty) are not methods: they live in the obfuscator
and the task step and compose with every method.

This module and the declarations are torch-free (the config reads them); the training
hooks import torch when they run.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Literal

if TYPE_CHECKING:  # the hooks' types; importing them here would pull in torch
    import torch

    from ..config import Config
    from ..models import Models
    from ..training.steps import Batch, StepContext

Stage = Literal["task", "reconstructor", "adversaries", "adversarial"]
# the attacker networks a method trains (and the audit reads as "its own"): the paper's
# (models/split.py: VGG-shaped P and R) or the robust method's (models/attackers.py)
AttackerFamily = Literal["paper", "robust"]
StepFn = Callable[[int, "Batch"], dict[str, float]]  # (batch index, batch) -> losses


class PrivacyMethod:
    """One privacy method. The defaults are the task stage alone (the no-privacy run)."""

    name: ClassVar[str]
    summary: ClassVar[str]
    # config keys (prefixes) that only this method reads: set with another method they do
    # nothing, and the CLI and sweeps say so (config.inert_keys)
    reads: ClassVar[tuple[str, ...]] = ()
    attackers: ClassVar[AttackerFamily] = "paper"

    def stages(self, cfg: Config) -> tuple[Stage, ...]:
        return ("task",)

    def trains_attackers(self, cfg: Config) -> bool:
        """Whether runs of this config train attackers of their own (the audit then
        compares them with its fresh attackers)."""
        return False

    def optimizers(self, models: Models, stage: Stage, lr: float,
                   cfg: Config) -> dict[str, torch.optim.Optimizer]:
        from ..training.steps import make_optimizers

        return make_optimizers(models, stage, lr)

    def begin_stage(self, cfg: Config, models: Models, stage: Stage) -> None:
        """Called when a stage starts fresh (not when a run resumes inside it)."""

    def refresh(self, loop: Any, ctx: StepContext, s_idx: int, epoch: int, scfg: Any) -> bool:
        """At the start of every adversarial epoch: renew attackers; True when any changed
        (under torchrun every rank then takes rank 0's)."""
        return False

    def epoch_steps(self, loop: Any, ctx: StepContext, stage: Stage, s_idx: int, epoch: int,
                    scfg: Any) -> StepFn:
        """The step function of one epoch of `stage`. `loop` (training/trainer.py) gives
        batch orders and batches (`order`, `batch`) and the mean face."""
        from ..training.steps import task_step

        if stage != "task":
            raise ValueError(f"privacy.method={self.name} has no stage {stage!r}")
        return lambda b, batch: task_step(ctx, batch)

    def record(self, cfg: Config, stage: Stage, epoch: int) -> dict[str, float]:
        """Extra entries of an epoch's metrics record."""
        return {}


METHODS: dict[str, PrivacyMethod] = {}
# name -> module of the built-in methods
BUILTIN = {"deepobfuscator": "paper", "robust": "robust", "none": "none"}


def register_method(cls: type[PrivacyMethod]) -> type[PrivacyMethod]:
    METHODS[cls.name] = cls()
    return cls


def method_kinds() -> dict[str, PrivacyMethod]:
    """The registry with the built-in methods loaded, built-ins first in BUILTIN's order."""
    for mod in BUILTIN.values():
        importlib.import_module(f"{__package__}.{mod}")
    return {**{name: METHODS[name] for name in BUILTIN}, **METHODS}


def method_for(cfg: Config) -> PrivacyMethod:
    kinds = method_kinds()
    name = cfg.privacy.method
    if name not in kinds:
        from ..config import ConfigError

        raise ConfigError(f"unknown privacy.method {name!r}; valid: {', '.join(kinds)}")
    return kinds[name]


def unread_keys(cfg: Config) -> tuple[str, ...]:
    """The config key prefixes some method reads but `cfg`'s does not."""
    own = method_for(cfg)
    return tuple(dict.fromkeys(k for m in method_kinds().values() for k in m.reads
                               if k not in own.reads))
