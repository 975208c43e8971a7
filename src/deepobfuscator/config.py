"""Typed configuration: presets (YAML) + a user's YAML file + `key=value` overrides.

The resolved config is written into every run folder as `config.yaml`, so a run
can always be reproduced and resumed from exactly what produced it.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from .errors import ConfigError
from .preprocessing import ALIGN_MODES, OnBadImage, parse_crop

# data.augment (training/augment.py): none, or photo
AUGMENTS = ("none", "photo")

ROTATION_STEPS = ("noise", "reconstruction", "attribute", "adversaries", "classifier")

# The no-privacy reference every privacy figure is compared with: trained for the task
# alone, split where the paper splits (after VGG block 2) and uploading the full feature
# map. A defended run's own split point and defences are part of its defence, so the
# reference drops them (each defence declares how: defences/); data, width and training
# settings stay the defended run's.
_NO_PRIVACY_BASE = ("privacy.method=none", "model.split_block=2", "privacy.dcor_weight=0",
                    "train.refit_cloud=false", "privacy.extra_defences={}",
                    # inert without a second stage; pinned to the value every baseline had
                    # before the key existed, so its hash stays put
                    "train.adversarial.lr_schedule=constant")


def no_privacy_overrides() -> list[str]:
    """The overrides that turn a config into its no-privacy reference (`train --baseline`)."""
    from .defences import baseline_overrides

    return [*_NO_PRIVACY_BASE, *baseline_overrides()]


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


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("deepobfuscator.presets").iterdir()
                  if p.name.endswith(".yaml"))


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Resolve a config: built-in preset <- YAML file <- `a.b=value` overrides.

    `path` may be a YAML file or a preset name ("cpu", "paper"); the file may name
    its base with `preset: NAME`.
    """
    raw: dict = {}
    if path is not None and not Path(path).is_file() and str(path) in preset_names():
        raw = {"preset": str(path)}
    elif path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(
                f"config file not found: {p}; give a YAML file or a preset name "
                f"({', '.join(preset_names())})"
            )
        try:
            raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{p}: not a UTF-8 text file (byte {exc.start}); save the "
                              "config as UTF-8 YAML") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML ({exc})") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of keys to values")
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. seed=1)")
        _set_dotted(raw, key.strip(), yaml.safe_load(value) if value.strip() else "")
    preset = raw.get("preset", "cpu")
    if preset not in preset_names():
        raise ConfigError(f"unknown preset {preset!r}; valid presets: {', '.join(preset_names())}")
    base = yaml.safe_load(resources.files("deepobfuscator.presets").joinpath(f"{preset}.yaml")
                          .read_text()) or {}
    # the dataclass defaults first: overriding one key of a section (train.task.epochs=8)
    # keeps that section's other defaults (its lr) instead of a bare StageConfig's
    merged = _deep_merge(_deep_merge(Config().to_dict(), base), raw)
    merged["preset"] = preset
    cfg = _build(Config, merged, "")
    validate(cfg)
    return cfg


def config_from_dict(d: dict) -> Config:
    """A saved (resolved) config, as a run folder holds it. A key the run's version did not
    have yet takes the value that version used, not today's default."""
    d = copy.deepcopy(d)
    for section, key, then in _LATE_KEYS:
        if (sec := _section(d, section)) is not None:
            sec.setdefault(key, then)
    cfg = _build(Config, d, "")
    validate(cfg)
    return cfg


def save_config(cfg: Config, path: Path) -> None:
    from .io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def _set_dotted(d: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    for part in parts[:-1]:
        nxt = d.setdefault(part, {})
        if not isinstance(nxt, dict):
            d[part] = nxt = {}
        d = nxt
    d[parts[-1]] = value


def _deep_merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _build(cls: type, d: Any, where: str) -> Any:
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
        return _build(tp, value, where + ".")
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


def _hint(cfg: Any, key: str) -> Any:
    obj = cfg
    *parents, last = key.split(".")
    for part in parents:
        obj = getattr(obj, part)
    return get_type_hints(type(obj))[last]


def _enumerated(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, value) of every Literal-typed field, nested sections included."""
    out = []
    hints = get_type_hints(type(obj))
    for f in fields(obj):
        value = getattr(obj, f.name)
        if get_origin(hints[f.name]) is Literal:
            out.append((prefix + f.name, value))
        elif dataclasses.is_dataclass(value):
            out += _enumerated(value, f"{prefix}{f.name}.")
    return out


def _numbers(obj: Any, prefix: str = "") -> list[tuple[str, float]]:
    """(dotted key, value) of every float field, nested sections included."""
    out: list[tuple[str, float]] = []
    for f in fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, float):
            out.append((prefix + f.name, value))
        elif dataclasses.is_dataclass(value):
            out += _numbers(value, f"{prefix}{f.name}.")
    return out


def _check_numbers(cfg: Config) -> None:
    # NaN or infinity anywhere reaches torch as a traceback (issue 37: train.task.lr=nan)
    for key, value in _numbers(cfg):
        if not math.isfinite(value):
            raise ConfigError(f"{key}={value}: give a finite number")
        name = key.rsplit(".", 1)[-1]
        if (name == "lr" or name.endswith("_lr")) and not value > 0:
            raise ConfigError(f"{key}={value}: a learning rate must be > 0")


def _check_finish(cfg: Config) -> None:
    # the finish phase's cloud re-fit (training/finish.py)
    t = cfg.train
    if t.upload_tune_epochs < 0 or not t.upload_tune_lr > 0:
        raise ConfigError(f"train.upload_tune_epochs={t.upload_tune_epochs} and "
                          f"train.upload_tune_lr={t.upload_tune_lr}: give epochs >= 0 (0: the "
                          "cloud is not re-fitted to the sparse upload) and a learning rate > 0")
    if t.refit_cloud and t.upload_tune_epochs == 0:
        raise ConfigError("train.refit_cloud=true re-fits the cloud for "
                          "train.upload_tune_epochs epochs, which is 0: give it 1 or more, or "
                          "set train.refit_cloud=false")


def validate(cfg: Config) -> None:
    # enumerated keys are checked against their Literal when built; a Config made in
    # code (or changed with dataclasses.replace) is checked here
    _check_numbers(cfg)
    for key, value in _enumerated(cfg):
        tp = _hint(cfg, key)
        if value not in get_args(tp):
            raise ConfigError(f"{key}={value!r} is not valid; choose one of {list(get_args(tp))}")
    try:
        parse_crop(cfg.data.crop)
    except ValueError as exc:
        raise ConfigError(f"data.crop: {exc}") from None
    if cfg.data.align not in ALIGN_MODES:
        raise ConfigError(f"data.align={cfg.data.align!r} is not valid; choose one of "
                          f"{list(ALIGN_MODES)}")
    if cfg.data.augment not in AUGMENTS:
        raise ConfigError(f"data.augment={cfg.data.augment!r} is not valid; choose one of "
                          f"{list(AUGMENTS)}")
    if cfg.data.align != "none" and cfg.data.source == "synthfaces":
        raise ConfigError("data.align applies to photos (celeba, lfw, folder); synthfaces are "
                          "drawn already framed: leave data.align=none")
    for step in cfg.privacy.rotation:
        if step not in ROTATION_STEPS:
            raise ConfigError(
                f"privacy.rotation step {step!r} unknown; valid: {list(ROTATION_STEPS)}")
    if len(cfg.data.image_size) != 2 or min(cfg.data.image_size) < 16:  # code-made configs
        raise ConfigError(
            f"data.image_size must be [height, width] >= 16, got {cfg.data.image_size}")
    # 5 keeps every conv block on the device: the cloud runs only the MLP head
    if not 1 <= cfg.model.split_block <= 5:
        raise ConfigError(f"model.split_block must be 1..5 (blocks kept on the device), "
                          f"got {cfg.model.split_block}")
    # names of kinds are checked against their registries, the one list of each
    from .data.factory import SOURCES
    from .defences import validate_defences  # each defence checks its own keys
    from .methods import METHODS

    for key, name in (("data.source", cfg.data.source), *(
            (f"data.{role}.source", r.source) for role in ("attacker", "test")
            if (r := getattr(cfg.data, role)) is not None)):
        if name not in SOURCES:
            raise ConfigError(f"{key}={name!r} is not valid; choose one of {SOURCES.names()}")
    METHODS.lookup(cfg.privacy.method)
    validate_defences(cfg)
    _check_finish(cfg)
    if cfg.model.width <= 0:
        raise ConfigError(f"model.width must be positive, got {cfg.model.width}")
    p = cfg.privacy
    limits: dict[str, float] = {
        "privacy.dcor_weight": p.dcor_weight,
        "privacy.adversary_refresh": p.adversary_refresh,
        "privacy.robust.adversary_steps": p.robust.adversary_steps,
        "privacy.robust.refresh_steps": p.robust.refresh_steps,
        "privacy.robust.attribute_weight": p.robust.attribute_weight,
        "privacy.robust.reconstruction_weight": p.robust.reconstruction_weight,
        "privacy.robust.info_weight": p.robust.info_weight,
    }
    for key, limit in limits.items():
        if limit < 0:
            raise ConfigError(f"{key} must be >= 0, got {limit}")
    if not p.robust.info_temperature > 0:
        raise ConfigError("privacy.robust.info_temperature must be > 0 (it divides the "
                          f"similarities), got {p.robust.info_temperature}")
    if p.robust.ensemble < 1 or p.robust.decoder_width < 4:
        raise ConfigError("privacy.robust.ensemble must be >= 1 and privacy.robust.decoder_width "
                          f">= 4, got {p.robust.ensemble} and {p.robust.decoder_width}")
    from .tasks import parse_tasks

    tasks = parse_tasks(cfg.data.task)
    if both := [a for a in tasks.attributes if a in cfg.data.private]:
        raise ConfigError(f"data.task uses {both}, also listed in data.private: a private "
                          "attribute cannot be a task the cloud answers; drop it from one")
    if both := [a for a in cfg.data.held_out if a in (*tasks.attributes, *cfg.data.private)]:
        raise ConfigError(f"data.held_out {both} is also a task or private attribute: held-out "
                          "attributes are the ones no model trains on; drop them from one")
    fr = cfg.data
    if min(fr.val_fraction, fr.attacker_fraction, fr.test_fraction) < 0 or (
        fr.val_fraction + fr.attacker_fraction + fr.test_fraction >= 0.95
    ):
        raise ConfigError("data.val_fraction + attacker_fraction + test_fraction must be < 0.95, "
                          "each >= 0, leaving data for the defender")
