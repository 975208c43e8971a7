import dataclasses

import pytest
import yaml

from deepobfuscator.config import ConfigError, load_config, preset_names
from deepobfuscator.config_schema import SCHEMA


def test_presets_exist_and_resolve():
    assert {"cpu", "on-device", "paper", "robust", "private"} <= set(preset_names())
    cpu = load_config("cpu")
    assert cpu.data.image_size == (64, 64) and cpu.data.source == "synthfaces"
    paper = load_config("paper")
    assert paper.data.image_size == (218, 178) and paper.model.width == 1.0
    assert paper.model.fc_hidden == 4096 and paper.train.adversarial.batch_size == 32


def test_file_then_overrides_take_precedence(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"seed": 3, "data": {"task": "Male", "private": ["Young"]},
                                 "privacy": {"lambda": 2.5}}))
    cfg = load_config(f, ["seed=7", "train.task.epochs=9", "data.private=[Young,Eyeglasses]"])
    assert cfg.seed == 7 and cfg.data.task == "Male"
    assert cfg.data.private == ["Young", "Eyeglasses"]
    assert cfg.train.task.epochs == 9
    assert cfg.privacy.paper.lambda_ == 2.5 and cfg.to_dict()["privacy"]["paper"]["lambda"] == 2.5


def test_fingerprint_tracks_changes():
    assert load_config("cpu").fingerprint() == load_config("cpu").fingerprint()
    assert load_config("cpu").fingerprint() != load_config("cpu", ["seed=1"]).fingerprint()


@pytest.mark.parametrize("override, message", [
    (["data.sorce=celeba"], "unknown config key 'data.sorce'"),
    (["data.source=imagenet"], "data.source='imagenet' is not valid"),
    (["seed=abc"], "seed: expected an integer"),
    (["privacy.feature_noise=lots"], "privacy.feature_noise: expected a number"),
    (["privacy.paper.attribute_loss=kl"], "choose one of"),
    (["privacy.paper.rotation=[noise,dance]"], "rotation step 'dance' unknown"),
    (["data.task=Male"], "also listed in data.private"),
    (["data.task=[Smiling,Male]"], "data.task uses ['Male'], also listed in data.private"),
    (["data.task=[Smiling,Smiling]"], "['Smiling'] given twice"),
    (['data.task="[Smiling,Eyeglasses]"'], "looks like a list written as one string"),
    (["data.task=[{name: hair, classes: [other, Black_Hair]}]"], "'other' must be the last"),
    (["data.task=[{name: hair, colours: [Black_Hair]}]"], "['colours']; valid"),
    (["data.task=[{name: e, column: e, classes: 1}]"], "a column task needs classes >= 2"),
    (["data.task=[{name: g, classes: [Eyeglasses, other], weight: 0}]"], "weight must be"),
    (["data.crop={a: 1}"], "data.crop: expected one name"),
    (["privacy.extra_defences=[clip]"], "expected a mapping of names to settings"),
    (["seed"], "not of the form key=value"),
])
def test_bad_values_say_what_is_valid(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_config("cpu", override)


def test_exponents_without_a_dot_are_numbers(tmp_path):
    """YAML 1.1 reads 1e-3 as a string; a float key takes it as the number it means, on the
    command line and in a file."""
    assert load_config("cpu", ["train.upload_tune_lr=1e-3"]).train.upload_tune_lr == 1e-3
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  task:\n    lr: 3e-4\n")
    assert load_config(f).train.task.lr == 3e-4


def test_missing_file_and_unknown_preset(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    f = tmp_path / "c.yaml"
    f.write_text("preset: huge\n")
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        load_config(f)


def test_the_no_privacy_reference_drops_the_defence_and_keeps_the_rest(capsys):
    import yaml

    from deepobfuscator.cli import main

    assert main(["config", "--baseline", "model.width=0.5", "privacy.feature_noise=0.3",
                 "model.bottleneck=4", "model.split_block=3"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["privacy"]["method"] == "none" and cfg["privacy"]["feature_noise"] == 0
    assert cfg["model"]["split_block"] == 2 and cfg["model"]["bottleneck"] == 0
    assert cfg["model"]["width"] == 0.5  # everything else is the defended config's


def test_adversarial_settings_are_named_inert_only_without_the_adversarial_stages():
    from deepobfuscator.methods import inert_keys

    keys = ["privacy.paper.lambda=3", "train.adversarial.epochs=2", "model.bottleneck=2",
            "privacy.feature_noise=0.1"]
    assert inert_keys(load_config("cpu", ["privacy.method=none"]), keys) == [
        "privacy.paper.lambda=3", "train.adversarial.epochs=2"]
    assert inert_keys(load_config("cpu", ["privacy.method=deepobfuscator"]), keys) == []
    attackers = ["privacy.paper.rotation=[noise]", "privacy.robust.ensemble=3"]
    # the robust method reads neither the paper's lambda nor its rotation
    assert inert_keys(load_config("robust"), [*keys, *attackers]) == [
        "privacy.paper.lambda=3", "privacy.paper.rotation=[noise]"]
    # the default trains no attacker: it reads no attacker's setting, only the stage's length
    assert inert_keys(load_config("cpu"), [*keys, *attackers]) == [
        "privacy.paper.lambda=3", *attackers]
    assert inert_keys(load_config("paper"), ["privacy.robust.ensemble=3"]) == [
        "privacy.robust.ensemble=3"]
    assert inert_keys(load_config("paper"), keys) == []


def test_overriding_one_key_of_a_section_keeps_its_other_defaults():
    """train.adversarial.epochs=2 must not reset the stage's lr to a bare StageConfig's."""
    cpu = load_config("cpu")
    cfg = load_config("cpu", ["train.adversarial.epochs=2", "train.task.batch_size=16"])
    assert cfg.train.adversarial.epochs == 2
    assert cfg.train.adversarial.lr == cpu.train.adversarial.lr == 1e-3
    assert cfg.train.task.lr == cpu.train.task.lr and cfg.train.task.batch_size == 16
    paper = load_config("paper", ["train.adversarial.epochs=2"])
    assert (paper.train.adversarial.lr, paper.train.adversarial.batch_size) == (1e-4, 32)


def test_the_dataclass_defaults_are_the_default_preset():
    """One source of defaults: Config() in code is what --config cpu resolves to."""
    from deepobfuscator.config import Config, load_config

    assert Config().to_dict() == load_config("cpu").to_dict()


def test_the_default_is_the_robust_presets_phone_with_a_tighter_cap_a_gain_and_no_attackers(
) -> None:
    from deepobfuscator.methods import trains_attackers
    from deepobfuscator.models.budget import phone_budget

    cpu, robust = load_config("cpu"), load_config("robust")
    assert cpu.privacy.feature_noise == 4.0 and cpu.privacy.normalize_features
    assert cpu.privacy.method == "task-continuation" and robust.privacy.method == "robust"
    assert cpu.model.position_gain == 10.0 and robust.model.position_gain == 0
    # the default's schedules (docs/notebook.md "The default"); robust keeps its own
    assert (cpu.privacy.noise_warmup, cpu.train.adversarial.lr_schedule) == (4.0, "cosine")
    assert (robust.privacy.noise_warmup, robust.train.adversarial.lr_schedule) == (0.0,
                                                                                 "constant")
    assert trains_attackers(robust) and not trains_attackers(cpu)
    # `private`, the default's name before it was the default, still gives the same config
    assert dataclasses.replace(load_config("private"), preset="cpu") == cpu
    b_cpu, b_robust = phone_budget(cpu), phone_budget(robust)
    # the adversarial point's phone; the 16 strongest of its 256 numbers sent (a sparse
    # upload: 48 B instead of 288 B), under a fifth of its information cap
    assert b_cpu.phone_macs == b_robust.phone_macs
    assert (cpu.model.upload_positions, robust.model.upload_positions) == (16, 0)
    assert (b_cpu.upload_numbers, b_cpu.upload_bytes) == (16, 48)
    assert (b_robust.upload_numbers, b_robust.upload_bytes) == (256, 288)
    assert b_cpu.info_cap_bits < b_robust.info_cap_bits / 5

def test_a_saved_config_from_before_a_key_existed_keeps_that_versions_value():
    """A run folder's config.yaml written before model.position_gain existed (its runs had
    no gain) must not pick up today's default gain: resume, export and audit rebuild it."""
    from deepobfuscator.config import config_from_dict

    then = load_config("robust")
    d = then.to_dict()
    # written before versions were recorded: no `schema`, and without the two keys
    del d["schema"], d["model"]["position_gain"], d["model"]["bottleneck_context"]
    old = config_from_dict(d)
    assert old.schema == SCHEMA
    assert old.model.position_gain == 0 and not old.model.bottleneck_context
    assert old.fingerprint() == then.fingerprint()
    # a key the file does name is read as written
    assert config_from_dict(load_config("cpu").to_dict()).model.position_gain == 10.0


def test_a_saved_config_carries_its_format_version_and_a_newer_one_is_refused(tmp_path):
    from deepobfuscator.config import config_from_dict, save_config

    cfg = load_config("cpu")
    save_config(cfg, tmp_path / "config.yaml")
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert saved["schema"] == SCHEMA and config_from_dict(saved) == cfg
    # the version is the format's, not the run's: it changes no fingerprint
    assert dataclasses.replace(cfg, schema=1).fingerprint() == cfg.fingerprint()
    newer = {**saved, "schema": SCHEMA + 1}
    with pytest.raises(ConfigError, match=rf"newer deepobfuscator \(config schema {SCHEMA + 1}; "
                                          rf"this package reads up to {SCHEMA}\): upgrade"):
        config_from_dict(newer)
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(newer))
    with pytest.raises(ConfigError, match="newer deepobfuscator"):
        load_config(str(tmp_path / "mine.yaml"))
    with pytest.raises(ConfigError, match="whole number from 1"):
        config_from_dict({**saved, "schema": "two"})
    # a run's own config.yaml given as a user's file (schema and all) resolves as itself
    assert load_config(str(tmp_path / "config.yaml")) == cfg


def test_every_key_a_version_added_is_a_config_key_at_a_value_it_accepts():
    """SCHEMA_ADDED's entries name real keys, and a version-1 config holding every one of
    them at its value from before builds (the migration can always be applied)."""
    from deepobfuscator.config import config_from_dict
    from deepobfuscator.config_schema import SCHEMA_ADDED, SCHEMA_MOVED, _section

    assert max([*SCHEMA_ADDED, *SCHEMA_MOVED]) == SCHEMA  # each version says what it changed
    d = load_config("cpu").to_dict()
    del d["schema"]
    for added in SCHEMA_ADDED.values():
        for section, key, _ in added:
            sec = _section(d, section)
            assert sec is not None and key in sec, f"{section}.{key}"
            del sec[key]
    old = config_from_dict(d)
    for added in SCHEMA_ADDED.values():
        for section, key, before in added:
            assert _section(old.to_dict(), section)[key] == before, f"{section}.{key}"


def test_a_key_moved_by_a_version_reads_where_it_went_with_the_same_fingerprint(capsys):
    """Version 3 moved the paper's keys under privacy.paper: a saved config of version 2
    reads them there, with its fingerprint; a user's file or override that still names one
    where it was is moved with a warning."""
    from deepobfuscator.config import config_from_dict

    now = load_config("paper", ["privacy.paper.lambda=3", "privacy.paper.decoder_width=0.5"])
    v2 = now.to_dict()
    v2["schema"] = 2
    paper = v2["privacy"].pop("paper")
    v2["privacy"].update({k: v for k, v in paper.items()
                          if k not in ("decoder_width", "adversary_from_classifier")})
    v2["model"].update(decoder_width=paper["decoder_width"],
                       adversary_from_classifier=paper["adversary_from_classifier"])
    old = config_from_dict(v2)
    assert old == now and old.privacy.paper.lambda_ == 3 and old.fingerprint() == \
        now.fingerprint()
    capsys.readouterr()
    moved = load_config("paper", ["privacy.lambda=3", "model.decoder_width=0.5"])
    assert moved == now
    err = capsys.readouterr().err
    assert "privacy.lambda is now privacy.paper.lambda" in err
    assert "model.decoder_width is now privacy.paper.decoder_width" in err
