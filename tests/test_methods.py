"""The privacy-method registry (methods.py): every registered method, driven by the registry,
trains the stages it declares, moves the networks it says it trains, reads the keys it
declares and resumes to the same weights; a new method is one class and a registry entry."""

from __future__ import annotations

import json

import pytest
import torch
from resume_helpers import assert_resumes_bit_for_bit
from safetensors.torch import load_file

from deepobfuscator import methods as methods_mod
from deepobfuscator.config import ConfigError, load_config
from deepobfuscator.methods import (
    PrivacyMethod,
    inert_keys,
    method_for,
    method_kinds,
    trains_attackers,
)
from deepobfuscator.models import build_models
from deepobfuscator.runs import RunPaths
from deepobfuscator.training import train
from deepobfuscator.training.finish import finish_plan
from deepobfuscator.training.steps import classifier_step

NETS = ("encoder", "classifier", "adversaries", "reconstructor")
# the extra settings each built-in method is exercised with (small attackers, a refresh)
SETTINGS = {
    "none": [],
    "deepobfuscator": ["privacy.paper.adversary_refresh=1"],
    "robust": ["privacy.robust.ensemble=2", "privacy.robust.refresh_steps=3",
               "privacy.robust.decoder_width=8", "model.bottleneck=2"],
    "task-continuation": ["model.bottleneck=2"],
}


def _config(tiny_config, name: str, *more: str):
    return tiny_config(f"privacy.method={name}", *SETTINGS.get(name, []), *more)


def _weights(run) -> dict[str, dict[str, torch.Tensor]]:
    paths = RunPaths(run)
    return {n: load_file(str(paths.weight_file(n))) for n in NETS}


def _initial(cfg) -> dict[str, dict[str, torch.Tensor]]:
    torch.manual_seed(cfg.seed)  # as the trainer builds them
    models = build_models(cfg)
    return {n: {k: v.detach().clone() for k, v in getattr(models, n).state_dict().items()}
            for n in NETS}


def _moved(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())


def test_the_config_accepts_exactly_the_registered_methods():
    for name in method_kinds():
        assert load_config("cpu", [f"privacy.method={name}"]).privacy.method == name
    with pytest.raises(ConfigError, match="unknown privacy.method .nope.; valid: "):
        load_config("cpu", ["privacy.method=nope"])


def test_task_continuation_is_robust_with_its_attackers_off_step_for_step(tmp_path,
                                                                       tiny_config):
    """The named control trains E and C to the same weights, bit for bit, as `robust` with
    no attacker steps and no privacy terms (how the light-phone experiment ran it), and
    ignores privacy.robust."""
    off = ["privacy.robust.adversary_steps=0", "privacy.robust.attribute_weight=0",
           "privacy.robust.reconstruction_weight=0", "model.bottleneck=2",
           "privacy.normalize_features=true", "privacy.feature_noise=1"]
    ref = _weights(train(tiny_config("privacy.method=robust", *off), tmp_path / "robust",
                         progress=False))
    named = _weights(train(tiny_config("privacy.method=task-continuation", *off[3:],
                                       "privacy.robust.adversary_steps=5"),
                           tmp_path / "named", progress=False))
    for net in ("encoder", "classifier"):
        for key in ref[net]:
            assert torch.equal(ref[net][key], named[net][key]), f"{net}.{key} differs"
    # no attacker is trained, so none is scored: no untrained network's figure in the log
    rows = [json.loads(x) for x in RunPaths(tmp_path / "named").metrics.read_text().splitlines()]
    assert rows and not [k for r in rows for k in r if k.startswith(("val_adv", "val_recon"))]


@pytest.mark.parametrize("name", list(method_kinds()))
def test_every_method_trains_the_stages_and_networks_it_declares(tmp_path, tiny_config, name):
    cfg = _config(tiny_config, name)
    method = method_for(cfg)
    run = train(cfg, tmp_path / name, progress=False)
    info = json.loads(RunPaths(run).info.read_text())
    assert tuple(info["stages"]) == method.stages(cfg)
    stages = [json.loads(x)["stage"] for x in RunPaths(run).metrics.read_text().splitlines()]
    # then the finish phase's line, where the config has one (the default's sparse upload)
    finish = ["upload"] if finish_plan(cfg) else []
    assert list(dict.fromkeys(stages)) == [*method.stages(cfg), *finish]
    start, end = _initial(cfg), _weights(run)
    assert _moved(start["encoder"], end["encoder"]) and _moved(start["classifier"],
                                                                end["classifier"])
    # attackers move exactly when the method trains attackers of its own
    assert _moved(start["adversaries"], end["adversaries"]) == method.trains_attackers(cfg)
    assert trains_attackers(cfg) == method.trains_attackers(cfg)


@pytest.mark.parametrize("name", list(method_kinds()))
def test_a_methods_own_keys_are_inert_only_for_the_methods_that_do_not_read_them(tiny_config,
                                                                                 name):
    kinds = method_kinds()
    own = [f"{key}.x=1" for key in kinds[name].reads]
    assert inert_keys(_config(tiny_config, name), own) == []
    for other, method in kinds.items():
        foreign = [k for k in own if k.split(".x=")[0] not in method.reads]
        assert inert_keys(_config(tiny_config, other), foreign) == foreign, other


@pytest.mark.parametrize("name", list(method_kinds()))
def test_every_method_resumes_to_the_same_weights(tmp_path, tiny_config, monkeypatch, name):
    """Killed in the middle of its last epoch (after any refresh), resumed from the
    checkpoint, a run ends with the weights of one never interrupted."""
    assert_resumes_bit_for_bit(_config(tiny_config, name, "train.checkpoint_every_s=0"), tmp_path,
                    monkeypatch)


def test_a_run_with_several_tasks_resumes_to_the_same_weights(tmp_path, tiny_config,
                                                              monkeypatch):
    """Three tasks (one 4-class), the logit-adjusted loss and the erasure of their answer
    cells: killed mid-epoch and resumed, the same weights as an uninterrupted run."""
    assert_resumes_bit_for_bit(tiny_config(
        "data.task=[Smiling,Eyeglasses,{name: hair, classes: [Black_Hair, Blond_Hair, "
        "Brown_Hair, other]}]", "train.balance_tasks=true", "privacy.method=task-continuation",
        "train.checkpoint_every_s=0", "privacy.erase=[Male]"), tmp_path, monkeypatch)


class ClassifierTune(PrivacyMethod):
    """The docs' example (docs/robust.md): after the task stage (every method's, run by the
    trainer), the cloud classifier alone trains on, the phone's encoder frozen."""

    name = "classifier-tune"
    summary = "the task, then the classifier alone on the frozen encoder"
    reads = ("train.adversarial",)

    def stages(self, cfg):
        return ("task", "adversarial")

    def optimizers(self, models, stage, lr, cfg):
        return {"classifier": torch.optim.Adam(models.classifier.parameters(), lr=lr)}

    def epoch_steps(self, loop, ctx, stage, s_idx, epoch, scfg):
        return lambda b, batch: classifier_step(ctx, batch)


def test_a_new_method_is_one_class_and_a_registry_entry(tmp_path, tiny_config, monkeypatch):
    with pytest.raises(ConfigError, match="unknown privacy.method 'classifier-tune'"):
        tiny_config("privacy.method=classifier-tune")
    monkeypatch.setitem(methods_mod.METHODS, ClassifierTune.name, ClassifierTune())
    cfg = tiny_config("privacy.method=classifier-tune")
    assert not trains_attackers(cfg) and inert_keys(cfg, ["privacy.robust.ensemble=3"])
    tuned = train(cfg, tmp_path / "tuned", progress=False)
    task_only = train(tiny_config("privacy.method=none"), tmp_path / "none", progress=False)
    assert json.loads(RunPaths(tuned).info.read_text())["stages"] == ["task", "adversarial"]
    a, b = _weights(tuned), _weights(task_only)
    # the same task stage, then only the classifier moved
    assert not _moved(a["encoder"], b["encoder"]) and _moved(a["classifier"], b["classifier"])
