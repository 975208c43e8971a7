"""Upload defences: the stages between the obfuscator's VGG blocks and the wire.

The phone's upload is the split's feature map passed through a pipeline of stages, each
one defence: a bottleneck, pooling, a learned gain, the information cap, an erasure, the
feature noise, a sparse upload. A defence is one module with a `@register_defence` class
that declares everything the rest of the code needs to know about it:

- the config keys it owns (`keys`) and their validation (`validate`);
- when it is on (`enabled`) and its setting in the no-privacy baseline (`baseline`:
  overrides that turn it off);
- whether it acts during the task stage (`in_task_stage`: runs that differ only in the
  keys of defences that do not can share one task stage, training/reuse.py);
- its network (`build`: a module mapping the upload (N, C, H, W) to the next one), its
  output shape (`out_shape`) and the MACs a forward hook cannot see (`extra_macs`);
- where it runs on the device (`runs_on`: in the exported graph, or in the device's
  runtime after it, like the noise) and its entry in the export's manifest (`manifest`);
- an optional fit when training ends (`finish_step`, `fit_order` and `fit`: the finish
  phase, training/finish.py, calls them on the trained obfuscator).

The obfuscator (models/split.py) is the VGG blocks followed by the enabled stages in
`order`; the phone budget, the baseline's overrides, stage reuse and the export read this
registry. docs/defences.md shows a new defence end to end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from ..errors import ConfigError
from ..geometry import split_shape
from ..registry import Registry

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ..config_schema import Config


Shape = tuple[int, int, int]  # (C, H, W) of the upload at a point of the pipeline


@dataclass
class FitContext:
    """What a defence's fit gets when training ends: the config, the trained obfuscator
    (its stages before this one already fitted), and the defender's training images
    (N, H, W, 3) uint8 with their task labels (N, T) and private labels (N, r), columns in
    data.private's order. Fits must be pure functions of these (a resumed run and
    `choose-upload` fit the same)."""

    cfg: Config
    encoder: Any  # models.split.Obfuscator
    images: torch.Tensor
    task: torch.Tensor
    private: torch.Tensor


class Defence:
    """One upload stage. The defaults describe a stage with no weights to fit, inside the
    exported graph, with nothing to say in the manifest."""

    name: ClassVar[str]  # the stage's name in the obfuscator (its state-dict prefix)
    summary: ClassVar[str]
    order: ClassVar[int]  # position in the pipeline: lower runs first
    keys: ClassVar[tuple[str, ...]]  # dotted config keys this defence owns
    # overrides that turn it off in the no-privacy reference (`train --baseline`)
    baseline: ClassVar[tuple[str, ...]] = ()
    in_task_stage: ClassVar[bool] = True
    runs_on: ClassVar[Literal["graph", "runtime"]] = "graph"
    # the finish step that fits this stage when training ends (None: nothing to fit), and
    # where it runs among the fits: lower first (not the pipeline's order: the sparse
    # upload is chosen before the erasure is fitted to the numbers it sends)
    finish_step: ClassVar[str | None] = None
    fit_order: ClassVar[int] = 100
    # state-dict keys of runs made before defences/ existed: old prefix -> new prefix,
    # relative to the obfuscator (loading renames them)
    legacy_state: ClassVar[dict[str, str]] = {}

    def enabled(self, cfg: Config) -> bool:
        raise NotImplementedError

    def validate(self, cfg: Config) -> None:
        """Raise ConfigError naming the key and the fix; called for every config."""

    def build(self, cfg: Config, shape: Shape) -> nn.Module:
        """The stage's network for an upload of `shape` arriving here."""
        raise NotImplementedError

    def out_shape(self, cfg: Config, shape: Shape) -> Shape:
        return shape

    def extra_macs(self, cfg: Config, shape: Shape) -> int:
        """MACs the budget's Conv2d / Linear hooks do not count (a matrix product)."""
        return 0

    def manifest(self, cfg: Config, stage: nn.Module) -> dict | None:
        """What the device must know of this stage, beyond the exported graph."""
        return None

    def fit(self, stage: nn.Module, ctx: FitContext) -> dict:
        """Fit the stage when training ends; returns what to record in the run."""
        raise NotImplementedError(f"defence {self.name!r} has no fit")


DEFENCES: Registry[Defence] = Registry("defence", {
    "bottleneck": "deepobfuscator.defences.bottleneck",
    "pool": "deepobfuscator.defences.pool",
    "gain": "deepobfuscator.defences.gain",
    "cap": "deepobfuscator.defences.cap",
    "erase": "deepobfuscator.defences.erasure",
    "noise": "deepobfuscator.defences.noise",
    "upload": "deepobfuscator.defences.sparse_upload",
}, error=ConfigError)
# A plug-in defence (registered by a module of the user's) is turned on, with its
# settings, by privacy.extra_defences: {name: {key: value}} (docs/defences.md).


def register_defence(cls: type[Defence]) -> type[Defence]:
    DEFENCES.register(cls.name, cls())
    return cls


def all_defences() -> list[Defence]:
    """Every registered defence, in pipeline order."""
    return sorted(DEFENCES.entries().values(), key=lambda d: d.order)


def pipeline(cfg: Config) -> list[Defence]:
    """The defences a config turns on, in the order the upload passes them."""
    return [d for d in all_defences() if d.enabled(cfg)]


def upload_shape(cfg: Config, split_shape: Shape) -> Shape:
    """The uploaded map's (C, H, W), from the split's."""
    shape = split_shape
    for d in pipeline(cfg):
        shape = d.out_shape(cfg, shape)
    return shape


def feature_shape(cfg: Config) -> Shape:
    """Shape (C, H, W) of the uploaded features for a config (zeros where not sent)."""
    return upload_shape(cfg, split_shape(cfg))


def sent_positions(cfg: Config) -> int:
    """K of a sparse upload (model.upload_positions), or 0 when every number is sent."""
    return cfg.model.upload_positions if "upload" in {d.name for d in pipeline(cfg)} else 0


def validate_defences(cfg: Config) -> None:
    for name in cfg.privacy.extra_defences:
        if name not in DEFENCES:
            raise ConfigError(f"privacy.extra_defences names {name!r}, which no module has "
                              f"registered (registered: {', '.join(DEFENCES.names())}); "
                              "import the module that defines it first")
        if name in DEFENCES.builtin:
            raise ConfigError(f"privacy.extra_defences names the built-in defence {name!r}; "
                              "set its own keys instead (docs/configuration.md)")
    for d in all_defences():
        d.validate(cfg)


def extra_settings(cfg: Config, name: str) -> dict | None:
    """A plug-in defence's settings (privacy.extra_defences.<name>), None when it is off."""
    return cfg.privacy.extra_defences.get(name)


def baseline_overrides() -> list[str]:
    """Every defence's overrides for the no-privacy reference, in pipeline order."""
    return [o for d in all_defences() for o in d.baseline]


def task_stage_keys() -> list[str]:
    """The config keys of every defence that acts during the task stage."""
    return [k for d in all_defences() if d.in_task_stage for k in d.keys]


def finish_fits(cfg: Config) -> list[Defence]:
    """The enabled defences with a fit when training ends, in their fit order."""
    return sorted((d for d in pipeline(cfg) if d.finish_step is not None),
                  key=lambda d: d.fit_order)


def extra_macs(cfg: Config, split_shape: Shape) -> int:
    """The MACs of every enabled stage that the budget's hooks cannot see."""
    total, shape = 0, split_shape
    for d in pipeline(cfg):
        total += d.extra_macs(cfg, shape)
        shape = d.out_shape(cfg, shape)
    return total


def manifest_entries(cfg: Config, encoder: Any) -> list[dict]:
    """The export manifest's `features.defences`: every stage the upload passes, in order,
    where it runs and what the device must know of it."""
    return [{"name": d.name, "runs_on": d.runs_on, "summary": d.summary,
             **(d.manifest(cfg, encoder.stage(d.name)) or {})} for d in pipeline(cfg)]
