"""privacy.noise_warmup: the task stage's feature noise ramps from 0 to privacy.feature_noise
over its first N epochs; evaluation, checkpoints and every later stage see the full noise,
and a run resumed mid-ramp ends with the weights of one never interrupted."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from deepobfuscator.config import ConfigError, config_from_dict
from deepobfuscator.runs import RunPaths, load_run
from deepobfuscator.training import train
from deepobfuscator.training import trainer as trainer_mod
from deepobfuscator.training.reuse import shares_task_stage
from deepobfuscator.training.steps import scaled_noise

CAP = ["privacy.normalize_features=true", "privacy.feature_noise=4", "model.bottleneck=2",
       "privacy.method=none", "train.task.epochs=2", "train.checkpoint_every_s=0"]


def _recorded_noise(monkeypatch) -> list[float]:
    """The encoder's noise std at every task step (the trainer's task_step, spied on)."""
    seen: list[float] = []
    real = trainer_mod.task_step

    def spy(ctx, batch):
        seen.append(ctx.models.encoder.noise_std)
        return real(ctx, batch)

    monkeypatch.setattr(trainer_mod, "task_step", spy)
    return seen


def test_noise_ramps_linearly_over_the_warmup_then_stays_full(tmp_path, tiny_config,
                                                              monkeypatch):
    seen = _recorded_noise(monkeypatch)
    run = train(tiny_config(*CAP, "privacy.noise_warmup=1"), tmp_path / "run", progress=False)
    per_epoch = len(seen) // 2
    ramp, full = seen[:per_epoch], seen[per_epoch:]
    assert ramp[0] == 0.0
    assert ramp == pytest.approx([4.0 * b / per_epoch for b in range(per_epoch)])
    assert full == [4.0] * per_epoch
    # what training leaves behind (and evaluation, export and the audit load) has full noise
    _, models = load_run(run)
    assert models.encoder.noise_std == 4.0


def test_without_warmup_every_step_has_the_full_noise(tmp_path, tiny_config, monkeypatch):
    seen = _recorded_noise(monkeypatch)
    train(tiny_config(*CAP), tmp_path / "run", progress=False)
    assert seen and set(seen) == {4.0}


def test_the_warmup_changes_what_is_learned(tmp_path, tiny_config):
    plain = train(tiny_config(*CAP), tmp_path / "plain", progress=False)
    warm = train(tiny_config(*CAP, "privacy.noise_warmup=2"), tmp_path / "warm", progress=False)
    a = load_file(str(RunPaths(plain).weight_file("encoder")))
    b = load_file(str(RunPaths(warm).weight_file("encoder")))
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_a_run_killed_mid_ramp_resumes_to_the_same_weights(tmp_path, tiny_config, monkeypatch):
    cfg = tiny_config(*CAP, "privacy.noise_warmup=2")
    real = trainer_mod._Loop.epoch_steps
    calls = {"n": 0, "die": -1}

    def counting(self, ctx, stage, s_idx, epoch, scfg):
        step = real(self, ctx, stage, s_idx, epoch, scfg)

        def wrapped(b, batch):
            if calls["n"] == calls["die"]:
                raise KeyboardInterrupt
            calls["n"] += 1
            return step(b, batch)

        return wrapped

    monkeypatch.setattr(trainer_mod._Loop, "epoch_steps", counting)
    whole = train(cfg, tmp_path / "whole", progress=False)
    calls.update(n=0, die=calls["n"] // 4 + 1)  # inside the first epoch: noise still ramping
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "killed", progress=False)
    calls.update(n=0, die=-1)
    resumed = train(cfg, tmp_path / "killed", progress=False)
    for net in ("encoder", "classifier"):
        a = load_file(str(RunPaths(whole).weight_file(net)))
        b = load_file(str(RunPaths(resumed).weight_file(net)))
        for key in a:
            assert torch.equal(a[key], b[key]), f"{net}.{key} differs"


def test_scaled_noise_restores_the_full_std_even_on_error():
    enc = torch.nn.Module()
    enc.noise_std = 4.0
    with pytest.raises(RuntimeError), scaled_noise(enc, 0.25):
        assert enc.noise_std == 1.0
        raise RuntimeError
    assert enc.noise_std == 4.0


def test_a_different_warmup_is_a_different_task_stage(tiny_config):
    """training/reuse.py never copies a stage 1 trained with another ramp."""
    assert shares_task_stage(tiny_config(*CAP), tiny_config(*CAP))
    assert not shares_task_stage(tiny_config(*CAP, "privacy.noise_warmup=1"), tiny_config(*CAP))


def test_warmup_config(tiny_config):
    with pytest.raises(ConfigError, match="noise_warmup"):
        tiny_config(*CAP, "privacy.noise_warmup=-1")
    # a run written before the key existed trained at full noise from its first step
    d = tiny_config(*CAP, "privacy.noise_warmup=2").to_dict()
    del d["privacy"]["noise_warmup"]
    assert config_from_dict(d).privacy.noise_warmup == 0.0
