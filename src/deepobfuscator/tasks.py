"""The questions the cloud answers: one binary attribute, several, or multi-class ones.

`data.task` takes one attribute name (today's single-task runs), a list of them, or
mappings for the rest:

    task: Smiling                                   # one binary task
    task: [Smiling, Eyeglasses, Wearing_Hat]        # several binary tasks, one head each
    task:
      - Smiling
      - {name: Eyeglasses, weight: 2}               # a task's loss weight (default 1)
      - {name: hair, classes: [Black_Hair, Blond_Hair, Brown_Hair, other], overlap: first}
      - {name: expression, column: expression, classes: 3}   # folder CSV: classes 0..2

A class group names mutually exclusive binary attributes, one class each; `other` (last)
is the class of images with none of them. Images with several of them are an error unless
`overlap: first` gives each the first one listed (CelebA's hair colours overlap on about
1% of the images). A column task reads K integer classes from a folder CSV column.

The cloud has one output per binary task (a logit) and K per K-class task (logits of a
softmax), side by side in `TaskSet.slices` order; each task's loss is weighted and the
sum divided by the weights' sum, so one task's loss is exactly today's BCE.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from .errors import ConfigError, DataError


class Labelled(Protocol):
    """What a task reads its labels from: a dataset's attribute and class columns
    (data/base.py's FaceDataset)."""

    source: str

    def attribute(self, name: str) -> np.ndarray: ...

    def classes(self, column: str) -> np.ndarray: ...

if TYPE_CHECKING:
    import torch

    from .config_schema import Config

OTHER = "other"
_SPEC_KEYS = {"name", "classes", "column", "overlap", "weight"}


@dataclass(frozen=True)
class Task:
    """One question. Binary: `classes` is empty, the label is the attribute `name`."""

    name: str
    classes: tuple[str, ...] = ()  # class names of a multi-class task
    members: tuple[str, ...] = ()  # a class group's attributes (class k = members[k])
    column: str = ""  # a column task's CSV column
    overlap: str = "error"  # a class group: "error" or "first"
    weight: float = 1.0

    @property
    def binary(self) -> bool:
        return not self.classes

    @property
    def outputs(self) -> int:
        """The cloud's outputs for this task: 1 logit, or one per class."""
        return 1 if self.binary else len(self.classes)

    @property
    def attributes(self) -> tuple[str, ...]:
        """The dataset attributes (or column) this task's labels are read from."""
        if self.binary:
            return (self.name,)
        return self.members if self.members else (self.column,)

    def labels(self, ds: Labelled) -> np.ndarray:
        """(N,) int64: 0/1 for a binary task, the class index of a multi-class one."""
        if self.binary:
            return ds.attribute(self.name)
        if self.column:
            y = ds.classes(self.column)
            if y.size and int(y.max()) >= len(self.classes):
                raise DataError(
                    f"task {self.name!r}: column {self.column!r} holds class {int(y.max())}, "
                    f"but the task has {len(self.classes)} classes; give classes: "
                    f"{int(y.max()) + 1} (or that many names)")
            return y
        cols = np.stack([ds.attribute(a) for a in self.members], 1).astype(bool)
        several = cols.sum(1) > 1
        if several.any() and self.overlap != "first":
            raise DataError(
                f"task {self.name!r}: {int(several.sum())} of {len(cols)} images in "
                f"{ds.source!r} have more than one of {list(self.members)}; add overlap: first "
                "to the task (each such image gets the first one listed) or choose exclusive "
                "attributes")
        none = ~cols.any(1)
        if none.any() and self.classes[-1] != OTHER:
            raise DataError(
                f"task {self.name!r}: {int(none.sum())} of {len(cols)} images in "
                f"{ds.source!r} have none of {list(self.members)}; add {OTHER!r} as the last "
                "class")
        return np.where(none, len(self.members), cols.argmax(1)).astype(np.int64)

    def to_spec(self) -> str | dict[str, Any]:
        """The config value this task was given as (normalised)."""
        if self.binary and self.weight == 1.0:
            return self.name
        out: dict[str, Any] = {"name": self.name}
        if self.column:
            out["column"] = self.column
        if not self.binary:
            out["classes"] = list(self.classes)
        if self.members and self.overlap != "error":
            out["overlap"] = self.overlap
        if self.weight != 1.0:
            out["weight"] = self.weight
        return out

    def describe(self) -> dict[str, Any]:
        """What the export's manifest and the audit say about this task."""
        return {"name": self.name, "kind": "binary" if self.binary else "classes",
                **({"classes": list(self.classes)} if not self.binary else {}),
                "from": list(self.attributes)}


@dataclass(frozen=True)
class TaskSet:
    """Every task of a run, in the order of the cloud's outputs."""

    tasks: tuple[Task, ...]
    _slices: tuple[tuple[int, int], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        slices, start = [], 0
        for t in self.tasks:
            slices.append((start, start + t.outputs))
            start += t.outputs
        object.__setattr__(self, "_slices", tuple(slices))

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self):
        return iter(self.tasks)

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tasks]

    @property
    def single(self) -> bool:
        """One binary task: the cloud's output is one logit per image, shape (B,)."""
        return len(self.tasks) == 1 and self.tasks[0].binary

    @property
    def outputs(self) -> int:
        return self._slices[-1][1]

    @property
    def slices(self) -> tuple[tuple[int, int], ...]:
        return self._slices

    @property
    def label(self) -> str:
        """How figures name the tasks: the task, or 'N tasks (mean)'."""
        return self.tasks[0].name if len(self.tasks) == 1 else f"{len(self.tasks)} tasks (mean)"

    @property
    def attributes(self) -> list[str]:
        return [a for t in self.tasks for a in t.attributes]

    @property
    def binary_attributes(self) -> list[str]:
        """The binary dataset attributes the tasks read (a column task's column is not)."""
        return [a for t in self.tasks if not t.column for a in t.attributes]

    def labels(self, ds: Labelled) -> np.ndarray:
        """(N, T) int64: each task's labels, one column per task."""
        return np.stack([t.labels(ds) for t in self.tasks], 1)

    def columns(self, logits: torch.Tensor) -> list[torch.Tensor]:
        """The cloud's outputs split per task: (B,) logits of a binary task, (B, K) of a
        multi-class one."""
        if self.single:
            return [logits]
        return [logits[:, a] if t.binary else logits[:, a:b]
                for t, (a, b) in zip(self.tasks, self._slices, strict=True)]

    def answer_vectors(self, labels: np.ndarray) -> np.ndarray:
        """Answers (N, T) as +-1 vectors (N, outputs): one number per binary task, one per
        class of a multi-class task; their cosine similarity ranks by how many answers
        agree (the identity floor's nearest neighbour)."""
        y = np.asarray(labels).reshape(len(labels), -1)
        cols = [(2 * y[:, k:k + 1] - 1) if t.binary else
                (2 * (y[:, k:k + 1] == np.arange(t.outputs)) - 1)
                for k, t in enumerate(self.tasks)]
        return np.concatenate(cols, 1).astype(np.float32)

    def log_priors(self, labels: np.ndarray) -> list[np.ndarray]:
        """Per task, the offsets of the logit-adjusted loss (train.balance_tasks), from the
        labels (N, T) of the training split: log(p1 / p0) for a binary task (1,), log p_c
        per class of a multi-class one (K,). Counts are smoothed by one, so a class that
        never occurs has a finite offset."""
        out = []
        for t, y in zip(self.tasks, np.asarray(labels).reshape(len(labels), -1).T,
                        strict=True):
            k = max(t.outputs, 2)
            p = (np.bincount(y.astype(np.int64), minlength=k)[:k] + 1.0) / (len(y) + k)
            out.append(np.log(p[1:2] / p[0:1]) if t.binary else np.log(p))
        return out

    def loss(self, logits: torch.Tensor, labels: torch.Tensor,
             log_priors: list[torch.Tensor] | None = None) -> torch.Tensor:
        """The weighted mean of the tasks' losses (BCE, or cross-entropy over K classes);
        labels (B, T) as floats ((B,) for one task). With `log_priors` (see `log_priors`)
        the loss is logit-adjusted (Menon et al., ICLR 2021): each task's log prior is
        added to its outputs inside the loss, so the outputs themselves are prior-free and
        their 0.5 threshold (argmax) aims at balanced accuracy. One binary task without
        priors: exactly its BCE."""
        import torch.nn.functional as F

        from .privacy import bce_logits

        labels = labels.reshape(labels.shape[0], -1)
        if self.single and log_priors is None:
            return bce_logits(logits, labels[:, 0])
        total = None
        for k, (t, out) in enumerate(zip(self.tasks, self.columns(logits), strict=True)):
            y = labels[:, k]
            if log_priors is not None:
                off = log_priors[k].to(out.device)
                out = out.float() + (off[0] if t.binary else off)
            term = bce_logits(out, y) if t.binary else F.cross_entropy(out.float(), y.long())
            total = t.weight * term if total is None else total + t.weight * term
        assert total is not None
        return total / sum(t.weight for t in self.tasks)

    def probabilities(self, logits: torch.Tensor) -> list[torch.Tensor]:
        """Per task: P(yes) (B,) of a binary task, class probabilities (B, K) of another."""
        return [out.float().sigmoid() if t.binary else out.float().softmax(1)
                for t, out in zip(self.tasks, self.columns(logits), strict=True)]

    def to_spec(self) -> str | list[str | dict[str, Any]]:
        specs = [t.to_spec() for t in self.tasks]
        return specs[0] if len(specs) == 1 and isinstance(specs[0], str) else specs

    def describe(self) -> list[dict[str, Any]]:
        return [{**t.describe(), "outputs": list(s)}
                for t, s in zip(self.tasks, self._slices, strict=True)]


def parse_tasks(spec: Any, where: str = "data.task") -> TaskSet:
    """A `data.task` value -> TaskSet; a bad spec is a one-line ConfigError."""
    items = spec if isinstance(spec, list) else [spec]
    if not items:
        raise ConfigError(f"{where} is empty: name at least one attribute, e.g. {where}=Smiling")
    tasks = [_parse_one(item, f"{where}[{i}]" if isinstance(spec, list) else where)
             for i, item in enumerate(items)]
    names = [t.name for t in tasks]
    if dup := sorted({n for n in names if names.count(n) > 1}):
        raise ConfigError(f"{where}: task(s) {dup} given twice; name each task once")
    used = [a for t in tasks for a in t.attributes]
    if dup := sorted({a for a in used if used.count(a) > 1}):
        raise ConfigError(f"{where}: attribute(s) {dup} feed two tasks; use each attribute in "
                          "one task only")
    return TaskSet(tuple(tasks))


def _parse_one(item: Any, where: str) -> Task:
    if isinstance(item, str):
        name = item.strip()
        if not name:
            raise ConfigError(f"{where} is empty: name an attribute, e.g. Smiling")
        if name.startswith("[") or "," in name:  # a list that reached us quoted
            raise ConfigError(f"{where}={item!r} looks like a list written as one string; "
                              "write it unquoted, e.g. data.task=[Smiling,Eyeglasses]")
        return Task(name)
    if not isinstance(item, dict):
        raise ConfigError(f"{where}: expected an attribute name or a mapping with name and "
                          f"classes, got {item!r}")
    if unknown := sorted(set(item) - _SPEC_KEYS):
        raise ConfigError(f"{where}: unknown task key(s) {unknown}; valid: {sorted(_SPEC_KEYS)}")
    given = item.get("name")
    if not isinstance(given, str) or not given.strip():
        raise ConfigError(f"{where}: a task mapping needs a name, e.g. {{name: hair, classes: "
                          "[Black_Hair, Blond_Hair, other]}")
    name = given.strip()
    weight = item.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
        raise ConfigError(f"{where}: weight must be a number > 0, got {weight!r}")
    overlap = item.get("overlap", "error")
    if overlap not in ("error", "first"):
        raise ConfigError(f"{where}: overlap={overlap!r}; use 'error' or 'first'")
    column = item.get("column", "")
    classes = item.get("classes")
    if column:
        if not isinstance(column, str):
            raise ConfigError(f"{where}: column must be a CSV column's name, got {column!r}")
        if isinstance(classes, int) and not isinstance(classes, bool):
            if classes < 2:
                raise ConfigError(f"{where}: a column task needs classes >= 2, got {classes}")
            names = tuple(str(k) for k in range(classes))
        elif isinstance(classes, list) and len(classes) >= 2 and all(
                isinstance(c, (str, int)) for c in classes):
            names = tuple(str(c) for c in classes)
        else:
            raise ConfigError(f"{where}: a column task needs classes: K (an integer >= 2) or "
                              f"a list of K class names, got {classes!r}")
        if overlap != "error":
            raise ConfigError(f"{where}: overlap applies to class groups, not to a column")
        return Task(name, names, (), column, "error", float(weight))
    if classes is None:
        if overlap != "error":
            raise ConfigError(f"{where}: overlap applies to class groups (classes: [...])")
        return Task(name, weight=float(weight))
    if not isinstance(classes, list) or not all(isinstance(c, str) and c for c in classes):
        raise ConfigError(f"{where}: classes must be a list of attribute names, e.g. "
                          f"[Black_Hair, Blond_Hair, other], got {classes!r}")
    if OTHER in classes[:-1]:
        raise ConfigError(f"{where}: {OTHER!r} must be the last class")
    members = tuple(c for c in classes if c != OTHER)
    if len(classes) < 2 or not members:
        raise ConfigError(f"{where}: a class group needs at least two classes, e.g. "
                          "[Eyeglasses, other]")
    if len(set(classes)) != len(classes):
        raise ConfigError(f"{where}: classes {classes} name a class twice")
    return Task(name, tuple(classes), members, "", overlap, float(weight))


@lru_cache(maxsize=64)
def _cached(spec_json: str) -> TaskSet:
    return parse_tasks(json.loads(spec_json))


def task_set(cfg: Config) -> TaskSet:
    """The tasks of a config (parsed once per distinct spec)."""
    return _cached(json.dumps(cfg.data.task, sort_keys=True))
