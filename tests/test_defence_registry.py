"""The defences registry drives these tests: every registered defence keeps its declared
contract (keys, validation, baseline, shapes, budget), the finish phase's plan comes from
the config, and docs/defences.md's plug-in example works end to end."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from deepobfuscator.config import ConfigError, load_config, no_privacy_overrides
from deepobfuscator.defences import DEFENCES, all_defences, pipeline
from deepobfuscator.geometry import split_shape
from deepobfuscator.models import build_models, feature_shape
from deepobfuscator.models.budget import count_macs, phone_budget
from deepobfuscator.registry import Registry
from deepobfuscator.training.finish import finish_plan

DOC = Path(__file__).resolve().parents[1] / "docs" / "defences.md"
# every built-in defence on at once (64 px, split 2: a 16 x 16 map; pool 2 -> 8 x 8)
ALL_ON = ["model.bottleneck=2", "model.bottleneck_context=true", "model.upload_pool=2",
          "model.position_gain=10", "privacy.normalize_features=true",
          "privacy.feature_noise=2", "privacy.erase=[Male]", "model.upload_positions=16"]
NAMES = [d.name for d in all_defences()]


def _value(cfg, dotted: str):
    obj = cfg
    *parents, last = dotted.split(".")
    for part in parents:
        obj = getattr(obj, part) if not isinstance(obj, dict) else obj.get(part)
    return getattr(obj, last) if not isinstance(obj, dict) else obj.get(last)


def test_the_registry_refuses_a_second_entry_under_a_taken_name():
    reg: Registry[object] = Registry("thing")
    a, b = object(), object()
    reg.register("x", a)
    reg.register("x", a)  # the same entry again: a module imported twice
    with pytest.raises(ValueError, match="already registered"):
        reg.register("x", [])
    assert reg.names() == ["x"] and reg.lookup("x") is a and dict(reg) == {"x": a}
    with pytest.raises(KeyError, match="unknown thing 'y'; valid: x"):
        reg.lookup("y")
    reg["z"] = b  # a mapping: monkeypatch.setitem swaps entries in and out
    del reg["z"]
    assert list(reg) == ["x"]


@pytest.mark.parametrize("name", NAMES)
def test_every_defence_owns_real_keys_and_the_baseline_turns_it_off(name):
    defence = DEFENCES.lookup(name)
    cfg = load_config("cpu", ALL_ON)
    for key in defence.keys:
        _value(cfg, key)  # an AttributeError here: a key the config does not have
    assert defence.enabled(cfg)
    base = load_config("cpu", [*ALL_ON, *no_privacy_overrides()])
    if name == "noise":  # always built: the device's contract, std 0 in the baseline
        assert base.privacy.feature_noise == 0
    else:
        assert not defence.enabled(base), f"train --baseline keeps {name}"


@pytest.mark.parametrize("name", NAMES)
def test_every_stage_has_the_declared_output_shape(name):
    cfg = load_config("cpu", ALL_ON)
    shape = split_shape(cfg)
    for d in pipeline(cfg):
        if d.name == name:
            stage = d.build(cfg, shape).eval()
            with torch.no_grad():
                out = stage(torch.randn(2, *shape))
            assert tuple(out.shape[1:]) == d.out_shape(cfg, shape)
            return
        shape = d.out_shape(cfg, shape)
    pytest.fail(f"{name} is not in the pipeline of a config that turns it on")


def test_the_obfuscator_is_the_blocks_then_the_stages_in_pipeline_order():
    cfg = load_config("cpu", ALL_ON)
    enc = build_models(cfg).encoder
    assert list(enc.stages) == [d.name for d in pipeline(cfg)] == NAMES
    assert [d.order for d in pipeline(cfg)] == sorted(d.order for d in pipeline(cfg))
    assert tuple(enc(torch.rand(2, 3, 64, 64)).shape[1:]) == feature_shape(cfg) == (2, 8, 8)
    # the budget counts the stages' MACs, including the erasure's matrix products
    plain = load_config("cpu", [*ALL_ON, "privacy.erase=[]"])
    assert phone_budget(cfg).phone_macs - phone_budget(plain).phone_macs == 2 * 2 * 8 * 8
    x = torch.zeros(1, 3, 64, 64)
    assert phone_budget(plain).phone_macs == count_macs(build_models(plain).encoder, x)


def test_a_defence_refuses_its_own_bad_values_in_one_line():
    with pytest.raises(ConfigError, match="model.upload_pool=3"):
        load_config("cpu", ["model.upload_pool=3"])
    with pytest.raises(ConfigError, match="privacy.feature_noise must be >= 0"):
        load_config("cpu", ["privacy.feature_noise=-1"])
    with pytest.raises(ConfigError, match="registered"):
        load_config("cpu", ["privacy.extra_defences={nothing: {}}"])
    with pytest.raises(ConfigError, match="built-in defence 'gain'"):
        load_config("cpu", ["privacy.extra_defences={gain: {}}"])


def test_the_finish_plan_is_read_from_the_config():
    assert finish_plan(load_config("cpu", ALL_ON)).steps == ["upload", "erase", "cloud"]
    assert finish_plan(load_config("cpu")).steps == ["upload", "cloud"]  # the default
    whole = load_config("cpu", ["model.upload_positions=0"])
    assert finish_plan(whole).steps == []
    assert finish_plan(whole, refit_mark=True).steps == ["cloud"]
    assert finish_plan(load_config("cpu", ["model.upload_positions=0",
                                           "train.refit_cloud=true"])).steps == ["cloud"]
    no_refit = load_config("cpu", ["train.upload_tune_epochs=0"])
    assert finish_plan(no_refit).steps == ["upload"]


def _doc_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


def test_the_docs_plug_in_defence_trains_exports_and_leaves_the_baseline(tmp_path,
                                                                          tiny_config):
    from deepobfuscator.deploy.export import export_run, without_noise
    from deepobfuscator.runs import load_run
    from deepobfuscator.training import train

    define, use = _doc_blocks()
    namespace: dict = {}
    if "clip" not in DEFENCES:
        exec(compile(define, str(DOC), "exec"), namespace)  # noqa: S102 - our own docs
    assert "train(cfg" in use and "privacy.extra_defences={clip: {limit: 2.0}}" in use
    try:
        clipped = ["privacy.extra_defences={clip: {limit: 0.5}}", "privacy.method=none",
                   "model.bottleneck=1", "privacy.normalize_features=true"]
        cfg = tiny_config(*clipped)
        names = [d.name for d in pipeline(cfg)]
        assert names.index("cap") < names.index("clip") < names.index("noise")
        with pytest.raises(ConfigError, match="clip.limit must be > 0"):
            tiny_config("privacy.extra_defences={clip: {limit: 0}}")
        run = train(cfg, tmp_path / "run", progress=False)
        _, models = load_run(run)
        encoder, _ = without_noise(models.encoder.eval())  # the clip acts before the noise
        with torch.no_grad():
            z = encoder(torch.rand(8, 3, 32, 32))
        assert float(z.abs().max()) <= 0.5 + 1e-6  # unit RMS alone goes past 0.5
        assert models.encoder.stage("clip").limit == 0.5
        out = export_run(run, tmp_path / "export", parity_images=4, mobile=False)
        manifest = json.loads((out / "manifest.json").read_text())
        entries = {e["name"]: e for e in manifest["features"]["defences"]}
        assert entries["clip"] == {"name": "clip", "runs_on": "graph", "limit": 0.5,
                                   "summary": "clip every uploaded number to [-limit, limit]"}
        assert entries["noise"]["runs_on"] == "runtime"
        base = tiny_config(*clipped, *no_privacy_overrides())
        assert "clip" not in [d.name for d in pipeline(base)]
    finally:
        DEFENCES.pop("clip", None)  # the registry as the other tests know it
