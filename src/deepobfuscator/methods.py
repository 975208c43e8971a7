"""Privacy methods (`privacy.method`): what training does beyond the task, one class each.

Every method trains the task stage first (E and C learn the task; the trainer runs it the
same way for all, so methods that share it can start from one checkpoint). A method
declares what follows: its stages, the config keys only it reads, the attacker networks
it builds and whether it trains any; and supplies each later stage's optimizers and step
function. The trainer (training/trainer.py) runs whatever method the config names through
this interface and names none of them.

Registered by name in `METHODS` (registry.py); the built-ins live beside their steps:
`deepobfuscator` (the paper's rotation) in training/paper.py, `robust` in
training/robust.py, `none` here. A new method is one module with a `@register_method`
class (and, for a built-in, its module in `BUILTIN`); the config accepts the names the
registry holds. docs/robust.md has an example.

The feature-level defences (privacy.normalize_features + feature_noise: the information
cap; privacy.dcor_weight: NoPeek's penalty) are not methods: they live in the obfuscator
and the task step and compose with every method.

This module imports only the config: the model builder reads `attackers` from it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from .errors import ConfigError
from .registry import Registry

if TYPE_CHECKING:
    from .config_schema import Config

Stage = Literal["task", "reconstructor", "adversaries", "adversarial"]
# the attacker networks a method builds (and the audit reads as "its own"): the paper's
# (models/split.py: VGG-shaped P and R) or the robust method's (models/attackers.py)
AttackerFamily = Literal["paper", "robust"]
# (batch index in the epoch, batch) -> the step's losses
StepFn = Callable[[int, Any], dict[str, float]]


class PrivacyMethod:
    """One privacy method. The defaults are the task stage alone (the no-privacy run).

    The training hooks receive the trainer's objects: `models` (models.Models), `ctx`
    (training.steps.StepContext: config, models, optimizers, precision) and `loop` (the
    trainer: `order`/`batch` for batch streams of its own, `mean_face`,
    `broadcast_models`)."""

    name: ClassVar[str]
    summary: ClassVar[str]
    # config keys (prefixes) that only this method reads: set with another method they do
    # nothing, and the CLI and sweeps say so (inert_keys)
    reads: ClassVar[tuple[str, ...]] = ()
    attackers: ClassVar[AttackerFamily] = "paper"

    def stages(self, cfg: Config) -> tuple[Stage, ...]:
        """The stages a run trains, "task" first."""
        return ("task",)

    def trains_attackers(self, cfg: Config) -> bool:
        """Whether runs of this config train attackers of their own (the audit then
        compares them with its fresh attackers)."""
        return False

    def optimizers(self, models: Any, stage: Stage, lr: float, cfg: Config) -> dict[str, Any]:
        """Fresh optimizers for a stage after the task stage, by name."""
        raise ValueError(f"privacy.method={self.name} has no stage {stage!r}")

    def begin_stage(self, cfg: Config, models: Any, stage: Stage) -> None:
        """Called when a stage starts fresh (not when a run resumes inside it)."""

    def refresh(self, loop: Any, ctx: Any, s_idx: int, epoch: int, scfg: Any) -> bool:
        """At the start of every adversarial epoch: renew attackers; True when any changed
        (under torchrun every rank then takes rank 0's)."""
        return False

    def epoch_steps(self, loop: Any, ctx: Any, stage: Stage, s_idx: int, epoch: int,
                    scfg: Any) -> StepFn:
        """The step function of one epoch of a stage after the task stage."""
        raise ValueError(f"privacy.method={self.name} has no stage {stage!r}")

    def record(self, cfg: Config, stage: Stage, epoch: int) -> dict[str, float]:
        """Extra entries of an epoch's metrics record."""
        return {}


# name -> the module that registers it (imported when the registry is first asked)
BUILTIN = {"deepobfuscator": "deepobfuscator.training.paper",
           "robust": "deepobfuscator.training.robust", "none": __name__,
           "task-continuation": "deepobfuscator.training.robust"}
METHODS: Registry[PrivacyMethod] = Registry("privacy.method", BUILTIN, error=ConfigError)


def register_method(cls: type[PrivacyMethod]) -> type[PrivacyMethod]:
    METHODS.register(cls.name, cls())
    return cls


@register_method
class NoPrivacy(PrivacyMethod):
    name = "none"
    summary = "the task alone (E and C): the no-privacy baseline"


def method_kinds() -> dict[str, PrivacyMethod]:
    """The registry with the built-in methods loaded, built-ins first in BUILTIN's order."""
    return METHODS.entries()


def method_for(cfg: Config) -> PrivacyMethod:
    return METHODS.lookup(cfg.privacy.method)


def inert_keys(cfg: Config, keys: list[str]) -> list[str]:
    """The keys among `keys` (overrides or grid keys) that `cfg`'s privacy method never
    reads: those another method declares as its own (`reads`)."""
    own = method_for(cfg)
    unread = tuple(dict.fromkeys(k for m in method_kinds().values() for k in m.reads
                                 if k not in own.reads))
    return [k for k in keys if k.split("=", 1)[0].startswith(unread)]


def trains_attackers(cfg: Config) -> bool:
    """Whether a config's privacy method trains attackers of its own: not with none, nor in
    the robust method's step-matched control (no attacker steps, no privacy terms)."""
    return method_for(cfg).trains_attackers(cfg)
