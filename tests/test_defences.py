"""The optional defences (feature noise, NoPeek's distance correlation) and adversary refresh."""

import pytest
import torch
from conftest import PAPER

from deepobfuscator.config import ConfigError, load_config
from deepobfuscator.models import build_models
from deepobfuscator.privacy import fixed_noise_image, settings_for_size
from deepobfuscator.training import steps
from deepobfuscator.training.steps import Batch, StepContext, make_optimizers

SMALL = ["data.image_size=[32,32]", "model.width=0.125", "model.fc_hidden=16",
         "data.private=[Male]", "model.split_block=2", "model.bottleneck=0",
         "privacy.method=deepobfuscator", "privacy.normalize_features=false",
         "privacy.feature_noise=0"]  # the paper's networks and steps


def _ctx(*overrides: str, stage: str = "adversarial") -> StepContext:
    cfg = load_config("cpu", [*SMALL, *overrides])
    torch.manual_seed(0)
    models = build_models(cfg)
    return StepContext(cfg, models, make_optimizers(models, stage, 1e-2),
                       settings_for_size(32, 32), fixed_noise_image((3, 32, 32), 0))


def _batch() -> Batch:
    g = torch.Generator().manual_seed(1)
    return Batch(torch.rand(8, 3, 32, 32, generator=g), torch.randint(0, 2, (8,), generator=g)
                 .float(), torch.randint(0, 2, (8, 1), generator=g).float())


def test_feature_noise_is_on_in_use_and_has_the_configured_spread():
    ctx = _ctx("privacy.feature_noise=0.5")
    enc = ctx.models.encoder.eval()
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        a, b = enc(x), enc(x)
        enc.noise_std = 0.0
        clean = enc(x)
    # the attacker sees noisy uploads even in eval mode; two uploads of one image differ
    assert not torch.equal(a, b)
    assert abs(float((a - clean).std()) - 0.5) < 0.05
    assert torch.equal(_ctx().models.encoder.eval()(x), _ctx().models.encoder.eval()(x))


def test_dcor_penalty_is_logged_and_changes_the_encoder_update():
    results = {}
    for w in (0.0, 5.0):
        ctx = _ctx(f"privacy.dcor_weight={w}", stage="task")
        losses = steps.task_step(ctx, _batch())
        assert ("dcor" in losses) == (w > 0)
        results[w] = torch.cat([p.flatten() for p in ctx.models.encoder.parameters()])
    assert not torch.allclose(results[0.0], results[5.0])
    ctx = _ctx("privacy.dcor_weight=1")
    losses = steps.rotation_step(ctx, _batch(), "attribute", lam=1.0)
    assert 0 < losses["dcor"] <= 1


def test_adversary_refresh_reinitialises_attackers_on_schedule_only():
    ctx = _ctx("privacy.paper.adversary_refresh=2")
    adv = ctx.models.adversaries["Male"]
    with torch.no_grad():
        for p in adv.parameters():
            p.fill_(0.123)
    old_opt = ctx.optimizers["adversaries"]
    enc_before = {k: v.clone() for k, v in ctx.models.encoder.state_dict().items()}
    assert not steps.maybe_refresh_attackers(ctx, 1, 1e-3)  # not a refresh epoch
    assert all(torch.all(p == 0.123) for p in adv.parameters())
    assert steps.maybe_refresh_attackers(ctx, 2, 1e-3)
    assert not any(torch.all(p == 0.123) for p in adv.parameters() if p.numel() > 1)
    assert ctx.optimizers["adversaries"] is not old_opt
    # only the attackers restart: the obfuscator and the classifier keep their weights
    assert all(torch.equal(enc_before[k], v) for k, v in ctx.models.encoder.state_dict().items())
    assert not steps.maybe_refresh_attackers(_ctx(), 2, 1e-3)  # off by default


def test_refresh_runs_inside_training(tmp_path, tiny_config, monkeypatch):
    """Inside a real training the attackers are renewed on the schedule (every adversarial
    epoch after the first here) and the run still finishes."""
    from deepobfuscator.training import train

    calls: list[tuple[int, bool]] = []
    real = steps.maybe_refresh_attackers

    def spy(ctx, epoch, lr):
        done = real(ctx, epoch, lr)
        calls.append((epoch, done))
        return done

    monkeypatch.setattr(steps, "maybe_refresh_attackers", spy)
    run = train(tiny_config(*PAPER, "privacy.paper.adversary_refresh=1", "privacy.dcor_weight=0.5",
                            "privacy.feature_noise=0.1"), tmp_path / "r", progress=False)
    assert (run / "weights").is_dir()
    assert [e for e, _ in calls] == [0, 1]  # once per adversarial epoch (2 in TINY)
    assert any(done for _, done in calls)  # and at least one renewed the attackers


@pytest.mark.parametrize("key", ["feature_noise", "dcor_weight", "paper.adversary_refresh"])
def test_negative_defence_settings_are_refused(key):
    with pytest.raises(ConfigError, match=f"privacy.{key} must be >= 0"):
        load_config("cpu", [f"privacy.{key}=-1"])
