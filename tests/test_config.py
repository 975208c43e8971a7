import pytest
import yaml

from deepobfuscator.config import ConfigError, load_config, preset_names


def test_presets_exist_and_resolve():
    assert {"cpu", "on-device", "paper"} <= set(preset_names())
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
    assert cfg.privacy.lambda_ == 2.5 and cfg.to_dict()["privacy"]["lambda"] == 2.5


def test_fingerprint_tracks_changes():
    assert load_config("cpu").fingerprint() == load_config("cpu").fingerprint()
    assert load_config("cpu").fingerprint() != load_config("cpu", ["seed=1"]).fingerprint()


@pytest.mark.parametrize("override, message", [
    (["data.sorce=celeba"], "unknown config key 'data.sorce'"),
    (["data.source=imagenet"], "data.source='imagenet' is not valid"),
    (["seed=abc"], "seed: expected an integer"),
    (["privacy.attribute_loss=kl"], "choose one of"),
    (["privacy.rotation=[noise,dance]"], "rotation step 'dance' unknown"),
    (["data.task=Male"], "also listed in data.private"),
    (["seed"], "not of the form key=value"),
])
def test_bad_values_say_what_is_valid(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_config("cpu", override)


def test_missing_file_and_unknown_preset(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    f = tmp_path / "c.yaml"
    f.write_text("preset: tiny\n")
    with pytest.raises(ConfigError, match="unknown preset 'tiny'"):
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

    keys = ["privacy.lambda=3", "train.adversarial.epochs=2", "model.bottleneck=2",
            "privacy.feature_noise=0.1"]
    assert inert_keys(load_config("cpu", ["privacy.method=none"]), keys) == [
        "privacy.lambda=3", "train.adversarial.epochs=2"]
    assert inert_keys(load_config("cpu", ["privacy.method=deepobfuscator"]), keys) == []
    # the default robust method reads neither the paper's lambda nor its rotation
    assert inert_keys(load_config("cpu"), [*keys, "privacy.rotation=[noise]",
                                           "privacy.robust.ensemble=3"]) == [
        "privacy.lambda=3", "privacy.rotation=[noise]"]
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


def test_private_preset_is_the_default_phone_with_a_tighter_cap_a_gain_and_no_attackers() -> None:
    from deepobfuscator.methods import trains_attackers
    from deepobfuscator.models.budget import phone_budget

    cpu, private = load_config("cpu"), load_config("private")
    assert private.privacy.feature_noise == 4.0 and private.privacy.normalize_features
    assert private.model.position_gain == 10.0 and cpu.model.position_gain == 0
    assert trains_attackers(cpu) and not trains_attackers(private)
    b_cpu, b_private = phone_budget(cpu), phone_budget(private)
    # same phone and upload as the default, a quarter of its information cap
    assert (b_private.phone_macs, b_private.upload_bytes) == (b_cpu.phone_macs,
                                                              b_cpu.upload_bytes)
    assert b_private.info_cap_bits < b_cpu.info_cap_bits / 3
