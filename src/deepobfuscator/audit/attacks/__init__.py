"""The audit's attacks: one interface, one registry the audit loops over.

An audit attack takes the frozen run's features (the attacker split's, to train on, and
the test split's, to score) and returns the entries of the run's result it fills,
declaring the figures it reports (audit/figures.py). To add one, write a module here
with a subclass of `AuditAttack` decorated by `@register_attack`, and name the module
in `BUILTIN` below; the audit, the report and the tests pick it up from the registry.
docs/audit.md ("Adding an attack") has a short example.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from ...attacks.base import FeatureSet, FitSettings
from ..figures import Figure, FigureSpec, Section, filled

if TYPE_CHECKING:
    from ...config import Config
    from ...models import Models
    from ..settings import AuditSettings


@dataclass
class AttackContext:
    """What an attack gets for one audited run (the obfuscated run or the baseline)."""

    run: str  # "obfuscated" or "baseline"
    cfg: Config
    models: Models
    attacker: FeatureSet  # the attacker split, through the upload format: to train on
    test: FeatureSet  # the test split, through the upload format: to score on
    attributes: list[str]  # the task first, then the private attributes
    settings: AuditSettings
    fit: FitSettings
    device: torch.device
    weights_dir: Path  # where this run's fresh attackers' weights go
    embedder: Any = None  # the audit's identity embedder (shared by both runs), if any
    # what attacks hand to later ones (e.g. "reconstructions" from the inverse network)
    products: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # -> scores.npz
    curves: dict[str, dict] = field(default_factory=dict)  # training curves -> audit.json


def learned_view(ctx: AttackContext) -> tuple[FeatureSet, torch.Tensor]:
    """(training set, test features) for the attacks that learn from the features: every
    uploaded number, or with `settings.select_positions` = K only the K of highest
    variance on the attacker split, zeros elsewhere (ranked on the attacker's own data,
    the same K for both splits). Computed once per run."""
    k = ctx.settings.select_positions
    n = ctx.attacker.features[0].numel()
    if k <= 0 or k >= n:
        return ctx.attacker, ctx.test.features
    if "selected_view" not in ctx.products:
        var = ctx.attacker.features.flatten(1).double().var(0)
        mask = torch.zeros(n)
        mask[torch.argsort(-var.cpu(), stable=True)[:k]] = 1.0
        mask = mask.view(1, *ctx.attacker.features.shape[1:]).to(ctx.attacker.features.dtype)
        train = replace(ctx.attacker, features=ctx.attacker.features * mask)
        ctx.products["selected_view"] = (train, ctx.test.features * mask)
    return ctx.products["selected_view"]


class AuditAttack:
    """One attack of the audit. `run` returns entries of the run's result (audit.json
    runs.<run>); per-sample scores go to ctx.arrays, training curves to ctx.curves."""

    name: ClassVar[str]
    figures: ClassVar[tuple[FigureSpec, ...]] = ()
    needs: ClassVar[tuple[str, ...]] = ()  # products of earlier attacks it reads

    def applies(self, ctx: AttackContext) -> bool:
        return True

    def run(self, ctx: AttackContext) -> dict:
        raise NotImplementedError


ATTACKS: dict[str, type[AuditAttack]] = {}


def register_attack(cls: type[AuditAttack]) -> type[AuditAttack]:
    if cls.name in ATTACKS and ATTACKS[cls.name] is not cls:
        raise ValueError(f"an audit attack named {cls.name!r} is already registered")
    ATTACKS[cls.name] = cls
    return cls


def run_attacks(ctx: AttackContext) -> dict:
    """Every registered attack that applies, in registry order; their result entries."""
    result: dict = {}
    for name, cls in ATTACKS.items():
        attack = cls()
        if not attack.applies(ctx):
            continue
        missing = [p for p in cls.needs if p not in ctx.products]
        if missing:
            raise RuntimeError(f"audit attack {name!r} needs {missing}, which no earlier "
                               "attack produced: register it after the one that does")
        result.update(attack.run(ctx))
    return result


# -- the table of figures: every registered attack's, in the registry's order ---------

def figure_specs() -> list[FigureSpec]:
    """Every registered attack's figures, in the registry's order."""
    return [spec for attack in ATTACKS.values() for spec in attack.figures]


def figures_for(task: str, private: list[str], section: Section | None = None,
                headline: bool | None = None) -> list[Figure]:
    """The concrete figures of an audit: privacy ones first, then utility, then training."""
    order = {"privacy": 0, "utility": 1, "training": 2}
    out = [fig for spec in figure_specs() for fig in spec.expand(task, private)
           if (section is None or spec.section == section)
           and (headline is None or spec.headline == headline)]
    return sorted(out, key=lambda fig: order[fig.section])  # stable: registry order within


def figure_by_key(key: str, task: str = "the task") -> Figure:
    """A concrete figure from its key ("reid_top1", "attribute:Male"), for labels."""
    for spec in figure_specs():
        if spec.per in ("one", "task") and spec.key == key:
            return Figure(**{**spec.__dict__, **filled(spec, task, task)})
        head, _, tail = spec.key.partition("{attr}")
        if spec.per == "private" and key.startswith(head) and key.endswith(tail) and \
                len(key) > len(head) + len(tail):
            attr = key[len(head): len(key) - len(tail)]
            return Figure(**{**spec.__dict__, **filled(spec, attr, task)})
    raise KeyError(f"no audit figure has the key {key!r}")


# the registry, in the order the audit runs them (and the verdict lists their figures)
BUILTIN = ("inversion", "whitebox", "attributes", "reidentification", "own_adversaries",
           "utility")
for _module in BUILTIN:
    importlib.import_module(f"{__name__}.{_module}")
