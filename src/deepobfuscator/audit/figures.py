"""What an audit figure is: where it lives, which way is better, its chance level.

Every audit attack (audit/attacks/) declares the figures it reports as `FigureSpec`s; the
attacks' registry makes them the single table of figures (`figures_for`, `figure_by_key`
in audit/attacks/). The verdict table, the terminal summary, the sweep's frontier and the
experiment tables all read figures through that table (and `AuditResult`), so a new
figure is one spec in its attack's file. A spec may stand for one figure per attribute
(`per="private"`, `"task"` or `"held_out"`: the placeholder `{attr}` in its strings is
filled for each; `{task}` is the task, or "N tasks (mean)" where the cloud answers several).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Better = Literal["lower", "higher"]
# privacy: attacker success on the features (verdict, lower is better); utility: what the
# cloud or a probe gets for the task (verdict, higher is better); training: the run's own
# training-time adversaries (compared with the fresh attackers, not in the verdict)
Section = Literal["privacy", "utility", "training"]


@dataclass(frozen=True)
class FigureSpec:
    key: str  # stable id in frontier.json and summaries, e.g. "attribute:{attr}"
    label: str  # the verdict table's wording
    short: str  # plots and compact tables
    path: tuple[str, ...]  # into one run's result (audit.json runs.<run>)
    better: Better
    # chance / floor: a path into audit.json `chance`, a constant, or None
    chance: tuple[str, ...] | float | None = None
    # one figure, or one per private attribute, per task (several tasks only: with one, the
    # "one" figures are the task's), or per held-out attribute (data.held_out)
    per: Literal["one", "private", "task", "held_out"] = "one"
    fmt: str = "{:.3f}"
    unit: str = ""
    section: Section = "privacy"
    headline: bool = False  # one of the few figures of sweeps and experiment tables
    optional: bool = False  # reported only when an optional extra is installed
    held_out: bool = False  # a figure of the held-out attributes: none when there are none

    def expand(self, names: Names) -> list[Figure]:
        """The concrete figures of this spec for an audit's tasks and attributes."""
        attrs = {"one": [""], "task": names.tasks if len(names.tasks) > 1 else [],
                 "private": names.private, "held_out": names.held_out}[self.per]
        if self.held_out and not names.held_out:
            return []
        return [Figure(**{**self.__dict__, **filled(self, a, names.task)}) for a in attrs]


@dataclass(frozen=True)
class Names:
    """What an audit's figures are about: its tasks, private and held-out attributes."""

    tasks: list[str]
    private: list[str]
    held_out: list[str]

    @property
    def task(self) -> str:
        """`{task}` in a figure's words: the task, or "N tasks (mean)"."""
        return self.tasks[0] if len(self.tasks) == 1 else f"{len(self.tasks)} tasks (mean)"


@dataclass(frozen=True)
class Figure(FigureSpec):
    """One concrete figure (placeholders filled): what the tables read."""

    def value(self, run_result: dict) -> float | None:
        return _get(run_result, self.path)

    def chance_in(self, chance: dict) -> float | None:
        if self.chance is None or isinstance(self.chance, (int, float)):
            return self.chance
        return _get(chance, self.chance)

    def format(self, v: float | None) -> str:
        import math

        return "n/a" if v is None or not math.isfinite(v) else self.fmt.format(v)


def filled(spec: FigureSpec, attr: str, task: str) -> dict:
    def f(s: str) -> str:
        return s.replace("{attr}", attr).replace("{task}", task)

    chance = tuple(f(p) for p in spec.chance) if isinstance(spec.chance, tuple) \
        else spec.chance
    return {"key": f(spec.key), "label": f(spec.label), "short": f(spec.short),
            "path": tuple(f(p) for p in spec.path), "chance": chance, "per": "one"}


def _get(d: dict, path: tuple[str, ...]) -> float | None:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return None if d is None else float(d)  # type: ignore[arg-type]
