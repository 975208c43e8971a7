"""Schedules within a stage, both pure functions of the position so a resumed run ends with
the weights of one never interrupted:
- privacy.noise_warmup: the task stage's feature noise ramps from 0 to privacy.feature_noise
  over its first N epochs; evaluation, checkpoints and every later stage see the full noise;
- train.<stage>.lr_schedule=cosine: every optimizer's learning rate falls from its lr
  towards 0 over the stage."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from deepobfuscator.config import ConfigError, config_from_dict
from deepobfuscator.runs import RunPaths, load_run
from deepobfuscator.training import train
from deepobfuscator.training import trainer as trainer_mod
from deepobfuscator.training.reuse import shares_task_stage
from deepobfuscator.training.steps import cosine_fraction, scaled_noise

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


def test_a_warmup_longer_than_the_stage_ramps_over_the_whole_stage(tmp_path, tiny_config,
                                                                   monkeypatch):
    seen = _recorded_noise(monkeypatch)
    train(tiny_config(*CAP, "privacy.noise_warmup=8"), tmp_path / "run", progress=False)
    n = len(seen)
    assert seen == pytest.approx([4.0 * b / n for b in range(n)])


def test_without_warmup_every_step_has_the_full_noise(tmp_path, tiny_config, monkeypatch):
    seen = _recorded_noise(monkeypatch)
    train(tiny_config(*CAP, "privacy.noise_warmup=0"), tmp_path / "run", progress=False)
    assert seen and set(seen) == {4.0}


def test_the_warmup_changes_what_is_learned(tmp_path, tiny_config):
    plain = train(tiny_config(*CAP, "privacy.noise_warmup=0"), tmp_path / "plain",
                  progress=False)
    warm = train(tiny_config(*CAP, "privacy.noise_warmup=2"), tmp_path / "warm", progress=False)
    a = load_file(str(RunPaths(plain).weight_file("encoder")))
    b = load_file(str(RunPaths(warm).weight_file("encoder")))
    assert any(not torch.equal(a[k], b[k]) for k in a)


def _resume_equals_whole(tmp_path, monkeypatch, cfg, at: float) -> None:
    """Killed `at` (a share of its steps) into training and resumed, `cfg` ends with the
    weights of a run never interrupted."""
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
    calls.update(n=0, die=int(calls["n"] * at) + 1)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "killed", progress=False)
    calls.update(n=0, die=-1)
    resumed = train(cfg, tmp_path / "killed", progress=False)
    for net in ("encoder", "classifier"):
        a = load_file(str(RunPaths(whole).weight_file(net)))
        b = load_file(str(RunPaths(resumed).weight_file(net)))
        for key in a:
            assert torch.equal(a[key], b[key]), f"{net}.{key} differs"


def test_a_run_killed_mid_ramp_resumes_to_the_same_weights(tmp_path, tiny_config, monkeypatch):
    # a quarter into the task stage's 2 epochs: the noise is still ramping
    _resume_equals_whole(tmp_path, monkeypatch, tiny_config(*CAP, "privacy.noise_warmup=2"),
                         at=0.25)


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
    # without noise there is nothing to ramp: the same stage
    quiet = [*CAP, "privacy.feature_noise=0"]
    assert shares_task_stage(tiny_config(*quiet, "privacy.noise_warmup=1"), tiny_config(*quiet))


def test_warmup_config(tiny_config):
    with pytest.raises(ConfigError, match="noise_warmup"):
        tiny_config(*CAP, "privacy.noise_warmup=-1")
    # a run written before the key existed trained at full noise from its first step
    d = tiny_config(*CAP, "privacy.noise_warmup=2").to_dict()
    del d["schema"], d["privacy"]["noise_warmup"]
    assert config_from_dict(d).privacy.noise_warmup == 0.0


def test_cosine_fraction_falls_from_one_towards_zero():
    assert cosine_fraction(0, 0, 10, 2) == 1.0
    assert cosine_fraction(1, 0, 10, 2) == pytest.approx(0.5)
    steps = [cosine_fraction(e, b, 10, 2) for e in range(2) for b in range(10)]
    assert all(a > b for a, b in zip(steps, steps[1:], strict=False)) and 0 < steps[-1] < 0.01


def _recorded_lr(monkeypatch) -> list[float]:
    seen: list[float] = []
    real = trainer_mod.task_step

    def spy(ctx, batch):
        seen.append(ctx.optimizers["encoder_classifier"].param_groups[0]["lr"])
        return real(ctx, batch)

    monkeypatch.setattr(trainer_mod, "task_step", spy)
    return seen


def test_cosine_schedule_lowers_the_lr_batch_by_batch(tmp_path, tiny_config, monkeypatch):
    seen = _recorded_lr(monkeypatch)
    train(tiny_config(*CAP, "train.task.lr_schedule=cosine", "train.task.lr=0.002"),
          tmp_path / "run", progress=False)
    n = len(seen)
    assert seen == pytest.approx([0.002 * cosine_fraction(0, b, n // 2, 2) for b in range(n // 2)]
                                 + [0.002 * cosine_fraction(1, b, n // 2, 2)
                                    for b in range(n // 2)])


def test_constant_schedule_keeps_the_lr(tmp_path, tiny_config, monkeypatch):
    seen = _recorded_lr(monkeypatch)
    train(tiny_config(*CAP, "train.task.lr=0.002"), tmp_path / "run", progress=False)
    assert seen and set(seen) == {0.002}


def test_a_run_killed_mid_schedule_resumes_to_the_same_weights(tmp_path, tiny_config,
                                                               monkeypatch):
    """Killed in the continuation (a cosine stage after a cosine task stage): the rate
    resumes from the checkpoint's base, not from the decayed rate it was saved with."""
    cfg = tiny_config(*CAP, "privacy.method=task-continuation", "train.task.lr_schedule=cosine",
                      "train.adversarial.lr_schedule=cosine")
    _resume_equals_whole(tmp_path, monkeypatch, cfg, at=0.75)


def test_lr_schedule_config(tiny_config):
    with pytest.raises(ConfigError, match="lr_schedule"):
        tiny_config("train.task.lr_schedule=step")
    # a run written before the key existed trained at a constant rate, fingerprint unchanged
    now = tiny_config(*CAP, "train.adversarial.lr_schedule=constant")
    d = now.to_dict()
    del d["schema"]
    for stage in d["train"].values():
        if isinstance(stage, dict):
            del stage["lr_schedule"]
    old = config_from_dict(d)
    assert old.train.adversarial.lr_schedule == "constant"
    assert old.fingerprint() == now.fingerprint()
    # today's default for the continuation is the cosine, and it is part of the hash
    assert tiny_config(*CAP).fingerprint() != now.fingerprint()
