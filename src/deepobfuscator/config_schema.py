"""The configuration's schema: its sections as typed dataclasses, and how a nested mapping
(YAML, overrides, a run's saved config.yaml) is checked and built into them.

The lowest layer of the configuration: it knows no registry. config.py resolves presets,
files and overrides into a Config and checks the values against the registries (data
sources, methods, defences, tasks), which themselves only need these types.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from .errors import ConfigError
from .preprocessing import OnBadImage

# data.augment (training/augment.py): none, or photo
AUGMENTS = ("none", "photo")

ROTATION_STEPS = ("noise", "reconstruction", "attribute", "adversaries", "classifier")

# the choices of the config's enumerated keys: the one place they are listed (a value
# outside its Literal is refused when the config is built, naming the valid ones)
Precision = Literal["auto", "bf16", "fp32"]
AttributeLoss = Literal["neg_ce", "entropy"]
RobustAttributeLoss = Literal["entropy", "capped_ce"]


@dataclass
class RoleSource:
    """Where one data role comes from when it is not drawn from the main source."""

    source: str = "celeba"  # a registered data source (data/factory.py)
    root: str = ""
    partitions: list[int] | None = None
    csv: str = ""


@dataclass
class DataConfig:
    source: str = "synthfaces"  # a registered data source (data/factory.py)
    root: str = ""  # data folder (not used by synthfaces)
    csv: str = ""  # folder source: the CSV with file, attribute and identity columns
    attributes_file: str = ""  # lfw: lfw_attributes.txt (default: looked up beside root)
    file_column: str = "file"
    identity_column: str = ""
    # the cloud's questions: one attribute, a list, or multi-class tasks (tasks.py)
    task: str | list[str | dict[str, Any]] = "Smiling"
    private: list[str] = field(default_factory=lambda: ["Male"])
    # non-private attributes no model trains on: the audit's fresh probes read them from the
    # upload (what a cloud could still learn later: task-independent utility)
    held_out: list[str] = field(default_factory=list)
    image_size: tuple[int, int] = (64, 64)  # height, width ([h, w] in YAML)
    crop: str = "square"  # square | none | center:F | center:Npx (preprocessing.py)
    # none | mtcnn: find the face and warp it into CelebA's aligned frame before the crop
    # (deepobfuscator.align; photos that are not already aligned crops)
    align: str = "none"
    # none | photo: vary training images as real photos vary (shift, scale, rotation,
    # mirror, brightness, contrast, blur; training/augment.py); never at validation
    augment: str = "none"
    on_bad_image: OnBadImage = "error"
    cache: bool = True
    cache_dir: str = ""  # default: $DEEPOBFUSCATOR_CACHE or ~/.cache/deepobfuscator
    # synthfaces only
    synth_images: int = 10000
    synth_images_per_identity: int = 20
    synth_seed: int = 0
    # split fractions for roles drawn from the main source (by identity when known)
    val_fraction: float = 0.1
    attacker_fraction: float = 0.3
    test_fraction: float = 0.2
    # optional separate sources per role (the CelebA audit protocol uses these)
    attacker: RoleSource | None = None
    test: RoleSource | None = None
    max_images: int = 0  # 0 = all; cap the main source (quick experiments)

    def __post_init__(self) -> None:
        # a list of one name is that name: the same run, the same fingerprint
        if isinstance(self.task, list) and len(self.task) == 1 and isinstance(self.task[0], str):
            self.task = self.task[0]


@dataclass
class ModelConfig:
    width: float = 0.25  # channel multiplier on VGG16-BN widths (1.0 = the paper)
    split_block: int = 2  # obfuscator = VGG blocks [0, split_block)
    bottleneck: int = 1  # >0: 1x1 conv at the split to this many channels (smaller uploads)
    # >1: the phone average-pools the upload by this factor (2: a quarter of the numbers);
    # the cloud scales the map back up before its first block, so its compute is unchanged
    upload_pool: int = 1
    # the bottleneck also adds a linear map of the split's spatial mean at every position:
    # a whole-image signal repeated over the upload, averaged back out of the cap's noise
    bottleneck_context: bool = False
    # >0: a learned gain on every uploaded number, moving at this multiple of E's learning
    # rate: with the cap, E places its fixed signal power where the task needs it (aligned
    # faces: the mouth) and starves the rest. 0: none
    position_gain: float = 10.0
    # >0: upload only this many numbers per image, the ones with the most signal power on
    # the trained obfuscator (chosen when training ends, from the defender's training
    # images; no weight of E changes, and C re-fits: train.upload_tune_epochs). Under the
    # cap the rest carry almost nothing; they are not sent and the cloud reads zeros
    # there. 0 (or the map's size): all
    upload_positions: int = 16
    fc_hidden: int = 256  # classifier/adversary hidden width (paper: 4096)
    dropout: float = 0.5
    decoder_width: float = 1.0  # reconstructor channel multiplier relative to the encoder
    adversary_from_classifier: bool = True  # paper: P starts from C's weights


@dataclass
class StageConfig:
    epochs: int = 1
    lr: float = 1e-4
    batch_size: int = 64
    # constant, or cosine: every optimizer's learning rate falls from lr towards 0 over the
    # stage, batch by batch (a pure function of the position, so resuming keeps it)
    lr_schedule: Literal["constant", "cosine"] = "constant"


@dataclass
class RobustConfig:
    """privacy.method=robust: adversarial obfuscation built to hold against fresh attackers
    (docs/robust.md). Each key is one ingredient; see docs/configuration.md."""

    # attacker updates (P ensemble and R), each on its own fresh batch, per encoder step;
    # 0 with both weights 0 is the step-matched task-only control
    adversary_steps: int = 2
    adversary_lr: float = 1e-3
    ensemble: int = 2  # attribute adversaries per private attribute
    # at every adversarial epoch after the first, one member per attribute restarts from new
    # weights and trains this many attacker steps before the encoder sees it (0 = no refresh)
    refresh_steps: int = 50
    attribute_loss: RobustAttributeLoss = "entropy"  # capped_ce: balanced CE capped at chance
    attribute_weight: float = 1.0
    # reconstructions pushed toward the mean face, never past it (0 = no decoder)
    reconstruction_weight: float = 1.0
    decoder_width: int = 32  # the training decoder: the audit's inverse network at this width
    # >0: E and C also minimise this weight x InfoNCE(upload, photo) through two small
    # critics trained with them (TIPRDC, MaSS): keep what tells photos apart while the
    # adversaries remove the private attributes. 0 = off: the game as before
    info_weight: float = 0.0
    info_temperature: float = 0.1  # the InfoNCE similarities' temperature


@dataclass
class PrivacyConfig:
    # deepobfuscator: the paper's adversarial stages after the task stage (its faithful
    # reproduction); robust: strong, current, bounded adversaries (docs/robust.md); none: the task
    # stage only (privacy then comes from the split and bottleneck alone, or from nothing:
    # the no-privacy baseline, `train --baseline`); task-continuation: `none` with the second
    # stage's steps (E and C go on training for the task under the cap): the default, since
    # at its cap the robust game measured level with no game (docs/results.md)
    method: str = "task-continuation"  # a registered privacy method (methods.py)
    attribute_loss: AttributeLoss = "neg_ce"  # neg_ce: the paper's
    rotation: list[str] = field(
        default_factory=lambda: list(ROTATION_STEPS)
    )
    lambda_: float = 10.0  # privacy weight; written `lambda` in YAML and overrides
    lambda_decay_after: int = 10  # constant up to this epoch, then linear to 0 at the end
    reconstruction_weight: float = 1.0
    attribute_weight: float = 1.0
    noise_seed: int = 1234  # the fixed noise image of the noise-target step
    # re-initialise the training adversaries (P and R) every N adversarial epochs (0 = never),
    # so the obfuscator cannot overfit one attacker
    adversary_refresh: int = 0
    # defences to compare against, usable with either method (with `none`: stage 1 only)
    feature_noise: float = 4.0  # Shredder-like: Gaussian noise of this std on the uploads
    dcor_weight: float = 0.0  # NoPeek: + weight * distance correlation(image, features)
    # information cap: every upload is scaled to unit root-mean-square per image on the phone
    # (in the exported graph), so feature_noise is relative to the signal and cannot be scaled
    # away; with noise s the upload carries at most D/2 * log2(1 + 1/s^2) bits (D numbers)
    normalize_features: bool = True
    # the task stage's first N epochs ramp the feature noise linearly from 0 to feature_noise
    # (a curriculum: at full noise from the first step some seeds learn the task slowly);
    # every evaluation, checkpoint and later stage sees the full noise
    noise_warmup: float = 4.0
    # private attributes (from data.private) whose linear trace the phone projects out of
    # the upload, fitted when training ends on the defender's data within each task class
    # (a closed-form adversary; defences/erasure.py); the cloud then re-fits
    # (train.upload_tune_epochs). [] = none
    erase: list[str] = field(default_factory=list)
    # defences registered outside the package (defences/: `register_defence`), by name,
    # each with its own settings: {name: {key: value}}. {} = none (docs/defences.md)
    extra_defences: dict[str, dict] = field(default_factory=dict)
    robust: RobustConfig = field(default_factory=RobustConfig)


@dataclass
class TrainConfig:
    task: StageConfig = field(default_factory=lambda: StageConfig(epochs=4, lr=1e-3))
    reconstructor: StageConfig = field(default_factory=lambda: StageConfig(epochs=2, lr=1e-3))
    adversaries: StageConfig = field(default_factory=lambda: StageConfig(epochs=2, lr=1e-3))
    adversarial: StageConfig = field(default_factory=lambda: StageConfig(
        epochs=2, lr=1e-3, lr_schedule="cosine"))
    checkpoint_every_s: float = 120.0  # also checkpoint mid-epoch this often
    eval_max_images: int = 1000  # validation images scored per epoch (0 = all)
    # after a sparse upload is chosen (model.upload_positions), C alone re-fits the task for
    # this many epochs on what the phone now sends (E frozen, so no uploaded number
    # changes): C was trained on every number, and zeros where noise was shift its inputs
    # (on small data by as much as 9 points of accuracy, docs/results.md). 0 = never
    upload_tune_epochs: int = 1
    upload_tune_lr: float = 1e-4
    # re-fit C that way after the last stage even when every number is sent: an E trained
    # against adversaries moves fast, and C's BatchNorm statistics can trail it (a robust
    # run at split 3 read 0.66 task accuracy as trained, 0.92 after one epoch)
    refit_cloud: bool = False
    # a logit-adjusted loss (each task's log prior on the defender's training split added
    # to its outputs inside the loss), so the cloud's outputs aim at balanced accuracy:
    # with a plain loss, rare answers (Eyeglasses, Wearing_Hat: 5-7% of CelebA) are rarely
    # given at all. Gradients are those of the plain loss, with rare classes' margins moved
    balance_tasks: bool = False


@dataclass
class Config:
    preset: str = "cpu"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    threads: int = 0  # CPU threads; 0 = auto: the cores other processes leave free (threads.py)
    precision: Precision = "auto"  # auto: bf16 where the hardware has it
    channels_last: bool = True  # NHWC memory layout: faster convolutions on CPU and GPU
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return _rename_out(dataclasses.asdict(self))

    def fingerprint(self) -> str:
        d = self.to_dict()
        # keys added after runs existed leave out their default, so a run trained before a
        # key existed keeps its fingerprint (resume, export and cache checks still match)
        for section, key, default in _LATE_KEYS:
            sec = _section(d, section)
            if sec is not None and sec.get(key) == default:
                del sec[key]
        if d["model"].get("upload_positions", 0) == 0 and not d["train"].get("refit_cloud") \
                and not d["privacy"].get("erase"):
            # no sparse upload, erasure or re-fit asked for: the re-fit's keys change nothing
            for key in ("upload_tune_epochs", "upload_tune_lr"):
                d["train"].pop(key, None)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


# (section, key, the value every run had before the key existed); a section is dotted
_LATE_KEYS = (("model", "upload_pool", 1), ("model", "bottleneck_context", False),
              ("model", "position_gain", 0.0), ("model", "upload_positions", 0),
              ("privacy", "noise_warmup", 0.0), ("train", "upload_tune_epochs", 0),
              ("train", "upload_tune_lr", 1e-4), ("train", "refit_cloud", False),
              ("privacy", "erase", []), ("privacy", "extra_defences", {}),
              ("data", "held_out", []), ("data", "align", "none"),
              ("data", "augment", "none"), ("train", "balance_tasks", False),
              ("privacy.robust", "info_weight", 0.0),
              ("privacy.robust", "info_temperature", 0.1),
              *((f"train.{stage}", "lr_schedule", "constant")
                for stage in ("task", "reconstructor", "adversaries", "adversarial")))


def _section(d: dict, dotted: str) -> dict | None:
    for part in dotted.split("."):
        d = d.get(part) if isinstance(d, dict) else None  # type: ignore[assignment]
    return d if isinstance(d, dict) else None


# YAML uses `lambda`; Python cannot.
_RENAMES = {"lambda": "lambda_"}


def _rename_out(d: Any) -> Any:
    if isinstance(d, dict):
        inv = {v: k for k, v in _RENAMES.items()}
        return {inv.get(k, k): _rename_out(v) for k, v in d.items()}
    if isinstance(d, tuple):  # YAML and JSON write lists
        return [_rename_out(v) for v in d]
    return d


def save_config(cfg: Config, path: Path) -> None:
    from .io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def set_dotted(d: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    for part in parts[:-1]:
        nxt = d.setdefault(part, {})
        if not isinstance(nxt, dict):
            d[part] = nxt = {}
        d = nxt
    d[parts[-1]] = value


def deep_merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def build(cls: type, d: Any, where: str) -> Any:
    if not isinstance(d, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {d!r}")
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    kwargs = {}
    for key, value in d.items():
        attr = _RENAMES.get(key, key)
        if attr not in names:
            valid = sorted(_rename_out({n: 0 for n in names}))
            raise ConfigError(f"unknown config key {where + key!r}; valid keys here: {valid}")
        kwargs[attr] = _coerce(hints[attr], value, f"{where}{key}")
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = get_origin(tp)
    args = get_args(tp)
    if origin in (Union, UnionType) and type(None) not in args:
        # e.g. data.task: a name, or a list of names and mappings; the shape of the value
        # picks the alternative (tasks.py checks the contents)
        for alt in args:
            kind = get_origin(alt) or alt
            if isinstance(value, list if kind is list else dict if kind is dict else str):
                return _coerce(alt, value, where)
        return _coerce(args[0], value, where)
    if origin is not None and type(None) in args:  # Optional[X]
        if value is None:
            return None
        tp = next(a for a in args if a is not type(None))
        origin, args = get_origin(tp), get_args(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return build(tp, value, where + ".")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}={value!r} is not valid; choose one of {list(args)}")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of names to settings, got {value!r}")
        return {str(k): _coerce(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of keys to values, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            value = [value]
        return [_coerce(args[0], v, where) for v in value]
    if origin is tuple:  # fixed length, e.g. image_size: [height, width]
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{where}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(a, v, where) for a, v in zip(args, value, strict=True))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if value is None:
            return ""
        if isinstance(value, (list, dict)):  # str() would turn it into one odd name
            raise ConfigError(f"{where}: expected one name, got {value!r}; "
                              + "give a single value")
        return str(value)
    return value


