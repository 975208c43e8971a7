"""Typed configuration: presets (YAML) + a user's YAML file + `key=value` overrides,
resolved into a Config (config_schema.py) and checked against the registries.

The resolved config is written into every run folder as `config.yaml`, so a run
can always be reproduced and resumed from exactly what produced it.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from dataclasses import fields
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml

from .config_schema import (
    AUGMENTS,
    ROTATION_STEPS,
    SCHEMA,
    SCHEMA_ADDED,
    SCHEMA_MOVED,
    AttributeLoss,
    Config,
    DataConfig,
    ModelConfig,
    Precision,
    PrivacyConfig,
    RobustAttributeLoss,
    RobustConfig,
    RoleSource,
    StageConfig,
    TrainConfig,
    _section,
    build,
    deep_merge,
    move_keys,
    save_config,
    set_dotted,
)
from .errors import ConfigError
from .log import log
from .preprocessing import ALIGN_MODES, parse_crop

__all__ = ["AUGMENTS", "ROTATION_STEPS", "AttributeLoss", "Config", "ConfigError", "DataConfig",
           "ModelConfig", "Precision", "PrivacyConfig", "RobustAttributeLoss", "RobustConfig",
           "RoleSource", "StageConfig", "TrainConfig", "config_from_dict", "load_config",
           "no_privacy_overrides", "preset_names", "preset_overrides", "save_config", "validate"]

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


def preset_overrides(name: str) -> list[str]:
    """A preset's own keys as `a.b=value` overrides: its settings on top of another base
    (the quick preset's sizes on the multitask preset, say)."""
    if name not in preset_names():
        raise ConfigError(f"unknown preset {name!r}; valid presets: {', '.join(preset_names())}")
    text = resources.files("deepobfuscator.presets").joinpath(f"{name}.yaml").read_text()

    def flat(d: dict, prefix: str = "") -> list[str]:
        out: list[str] = []
        for k, v in d.items():
            if isinstance(v, dict) and v:
                out += flat(v, f"{prefix}{k}.")
            else:
                out.append(f"{prefix}{k}={json.dumps(v)}")  # JSON is YAML: lists, numbers
        return out

    return flat(yaml.safe_load(text) or {})


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
        set_dotted(raw, key.strip(), yaml.safe_load(value) if value.strip() else "")
    preset = raw.get("preset", "cpu")
    if preset not in preset_names():
        raise ConfigError(f"unknown preset {preset!r}; valid presets: {', '.join(preset_names())}")
    base = yaml.safe_load(resources.files("deepobfuscator.presets").joinpath(f"{preset}.yaml")
                          .read_text()) or {}
    # the dataclass defaults first: overriding one key of a section (train.task.epochs=8)
    # keeps that section's other defaults (its lr) instead of a bare StageConfig's
    # a file of any version resolves against today's defaults (a run's own config.yaml
    # reads through config_from_dict instead); one from a newer package is refused
    _schema_of(raw)
    for moves in SCHEMA_MOVED.values():  # a key named where an older version had it
        for was in move_keys(raw, moves):
            now = dict(moves)[was]
            log.warning(f"{was} is now {now} (config schema {SCHEMA}): name it so in "
                        "your config file or override")
    merged = deep_merge(deep_merge(Config().to_dict(), base), raw)
    merged["preset"], merged["schema"] = preset, SCHEMA
    cfg = build(Config, merged, "")
    validate(cfg)
    return cfg


def _schema_of(d: dict) -> int:
    """A config mapping's format version (1 when it has none); a newer one than this
    package reads is a one-line error."""
    version = d.get("schema", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ConfigError(f"schema={version!r}: the config's format version is a whole "
                          "number from 1; leave the key out of your own files")
    if version > SCHEMA:
        raise ConfigError(f"this config was written by a newer deepobfuscator (config "
                          f"schema {version}; this package reads up to {SCHEMA}): upgrade "
                          "it (pip install -U deepobfuscator)")
    return version


def config_from_dict(d: dict) -> Config:
    """A saved (resolved) config, as a run folder holds it. A key the run's version did not
    have yet takes the value that version used, not today's default."""
    d = copy.deepcopy(d)
    version = _schema_of(d)
    for v in range(version + 1, SCHEMA + 1):
        for section, key, before in SCHEMA_ADDED.get(v, ()):
            if (sec := _section(d, section)) is not None:
                sec.setdefault(key, before)
        move_keys(d, SCHEMA_MOVED.get(v, ()))
    d["schema"] = SCHEMA
    cfg = build(Config, d, "")
    validate(cfg)
    return cfg


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
    for step in cfg.privacy.paper.rotation:
        if step not in ROTATION_STEPS:
            raise ConfigError(
                f"privacy.paper.rotation step {step!r} unknown; valid: {list(ROTATION_STEPS)}")
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
        "privacy.paper.adversary_refresh": p.paper.adversary_refresh,
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
