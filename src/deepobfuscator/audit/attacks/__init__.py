"""The audit's attacks: one interface, one registry the audit loops over.

An audit attack takes the frozen run's features (the attacker split's, to train on, and
the test split's, to score) and returns the entries of the run's result it fills,
declaring the figures it reports (audit/figures.py). To add one, write a module here
with a subclass of `AuditAttack` decorated by `@register_attack`, and name the module
in `BUILTIN` below; the audit, the report and the tests pick it up from the registry.
docs/audit.md ("Adding an attack") has a short example.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from ...attackers.base import FeatureSet, FitResult, FitSettings
from ...registry import Registry
from ..figures import Figure, FigureSpec, Names, Section, filled

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
    attributes: list[str]  # probed: the task (one binary task), private, held-out ones
    settings: AuditSettings
    fit: FitSettings
    device: torch.device
    weights_dir: Path  # where this run's fresh attackers' weights go
    embedder: Any = None  # the audit's identity embedder (shared by both runs), if any
    # the test split's answers to every task (N, T): 0/1, or a multi-class task's class
    task_labels: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))
    # what attacks hand to later ones (e.g. "reconstructions" from the inverse network)
    products: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # -> scores.npz
    curves: dict[str, dict] = field(default_factory=dict)  # training curves -> audit.json


@dataclass(frozen=True)
class View:
    """What a learned attacker trains and scores on: every uploaded number ("all"), or
    only the K that vary most on the attacker's own split, zeros elsewhere ("topK")."""

    name: str
    train: FeatureSet
    test: torch.Tensor
    positions: list[int] | None = None  # flat (C, H, W) indices kept; None = every one


def learned_views(ctx: AttackContext) -> list[View]:
    """The views a learned attacker (probes, inverse network) is trained on; the audit
    reports the one that leaks more (`pick_view`). Always every number; with
    `settings.select_positions` = K also the K of highest variance on the attacker split,
    when the upload carries feature noise and more than K numbers vary: an attacker who
    drops the numbers that are noise (the shipped gain says which) need not learn to
    ignore them. Computed once per run."""
    if "views" in ctx.products:
        return ctx.products["views"]
    views = [View("all", ctx.attacker, ctx.test.features)]
    k = ctx.settings.select_positions
    var = ctx.attacker.features.flatten(1).double().var(0).cpu()
    if k > 0 and ctx.cfg.privacy.feature_noise > 0 and int((var > 0).sum()) > k:
        keep = torch.argsort(-var, stable=True)[:k]
        mask = torch.zeros(var.numel())
        mask[keep] = 1.0
        mask = mask.view(1, *ctx.attacker.features.shape[1:]).to(ctx.attacker.features.dtype)
        views.append(View(f"top{k}", replace(ctx.attacker, features=ctx.attacker.features * mask),
                          ctx.test.features * mask, sorted(int(i) for i in keep)))
    ctx.products["views"] = views
    return views


def pick_view(ctx: AttackContext, key: str,
              fit_one: Callable[[View], tuple[Any, FitResult]],
              leak: Callable[[View, Any], tuple[float, Any]]) -> tuple[View, Any, Any]:
    """Fit one attacker per view and report the one that leaks more on the test split
    (`leak` returns its headline figure, higher = more leaked, and what the attack
    reports): an audit reports the strongest attacker it trained. Choosing by the
    attackers' own held-out loss instead kept the weaker Male probe on a 288-byte run
    (0.535 where the other view read 0.608; docs/audit.md). Records every view's curve
    and figure in ctx.curves (KEY for the reported one, KEY@VIEW for the others) and the
    choice. Returns (view, attacker, what `leak` returned for it)."""
    fitted = []
    for view in learned_views(ctx):
        attacker, curve = fit_one(view)
        fitted.append((view, attacker, curve, *leak(view, attacker)))
    view, attacker, _, _, out = max(fitted, key=lambda f: f[3])  # ties: every number
    for v, _, c, figure, _ in fitted:
        ctx.curves[key if v is view else f"{key}@{v.name}"] = {
            **c.to_dict(), "view": v.name, "figure": round(float(figure), 5)}
    if len(fitted) > 1:  # -> audit.json runs.<run>.views
        views = ctx.products.setdefault("view_choices", {"positions": fitted[1][0].positions})
        views[key] = view.name
    return view, attacker, out


class AuditAttack:
    """One attack of the audit. `run` returns entries of the run's result (audit.json
    runs.<run>); per-sample scores go to ctx.arrays, training curves to ctx.curves."""

    name: ClassVar[str]
    figures: ClassVar[tuple[FigureSpec, ...]] = ()
    needs: ClassVar[tuple[str, ...]] = ()  # products of earlier attacks it reads
    # run again on the mean of N uploads of each photo (audit setting `repeats`)
    repeatable: ClassVar[bool] = False

    def applies(self, ctx: AttackContext) -> bool:
        return True

    def run(self, ctx: AttackContext) -> dict:
        raise NotImplementedError


# the registry, in the order the audit runs them (and the verdict lists their figures)
BUILTIN = ("inversion", "whitebox", "prior_inversion", "attributes", "reid",
           "feature_reid", "identity", "pooled", "repeats", "training_adversaries", "utility")
# an attack's module, where its name differs (the registry orders the built-ins by name)
_MODULES = {"reid": "reidentification", "training_adversaries": "own_adversaries"}
ATTACKS: Registry[type[AuditAttack]] = Registry(
    "audit attack", {name: f"{__name__}.{_MODULES.get(name, name)}" for name in BUILTIN})


def register_attack(cls: type[AuditAttack]) -> type[AuditAttack]:
    ATTACKS.register(cls.name, cls)
    return cls


def run_attacks(ctx: AttackContext, repeatable_only: bool = False) -> dict:
    """Every registered attack that applies, in registry order; their result entries.
    repeatable_only: only those that run again on repeated uploads (audit/attacks/
    repeats.py)."""
    result: dict = {}
    for name, cls in ATTACKS.items():
        attack = cls()
        if (repeatable_only and not cls.repeatable) or not attack.applies(ctx):
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


def figures_for(names: Names, section: Section | None = None,
                headline: bool | None = None) -> list[Figure]:
    """The concrete figures of an audit: privacy ones first, then utility, then training."""
    order = {"privacy": 0, "utility": 1, "training": 2}
    out = [fig for spec in figure_specs() for fig in spec.expand(names)
           if (section is None or spec.section == section)
           and (headline is None or spec.headline == headline)]
    return sorted(out, key=lambda fig: order[fig.section])  # stable: registry order within


def figure_by_key(key: str, task: str = "the task") -> Figure:
    """A concrete figure from its key ("reid_top1", "attribute:Male"), for labels."""
    for spec in figure_specs():
        if spec.per == "one" and spec.key == key:
            return Figure(**{**spec.__dict__, **filled(spec, task, task)})
        head, _, tail = spec.key.partition("{attr}")
        if spec.per != "one" and key.startswith(head) and key.endswith(tail) and \
                len(key) > len(head) + len(tail):
            attr = key[len(head): len(key) - len(tail)]
            return Figure(**{**spec.__dict__, **filled(spec, attr, task)})
    raise KeyError(f"no audit figure has the key {key!r}")

