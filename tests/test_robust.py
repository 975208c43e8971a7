"""privacy.method=robust and the information cap: behaviour on small data."""

import json
import math

import numpy as np
import pytest
import torch
from conftest import PAPER
from safetensors.torch import load_file

from deepobfuscator.attackers.attribute_probe import AttributeProbe
from deepobfuscator.attackers.base import FeatureSet, FitSettings
from deepobfuscator.defences.cap import capacity_bits, unit_rms
from deepobfuscator.metrics import balanced_accuracy
from deepobfuscator.models import build_models
from deepobfuscator.models.attackers import Ensemble
from deepobfuscator.privacy import settings_for_size
from deepobfuscator.runs import RunPaths, load_run
from deepobfuscator.training import robust, train
from deepobfuscator.training.reuse import start_from_baseline
from deepobfuscator.training.steps import Batch, StepContext

ROBUST = ["privacy.method=robust", "privacy.robust.ensemble=2", "privacy.robust.refresh_steps=3",
          "privacy.robust.decoder_width=8", "model.bottleneck=2"]
CAP = ["privacy.normalize_features=true", "privacy.feature_noise=1.5"]


def _weights(run):
    paths = RunPaths(run)  # the critics only where the information term trained some
    return {n: load_file(str(paths.weight_file(n)))
            for n in ("encoder", "classifier", "adversaries", "reconstructor", "critics")
            if n != "critics" or paths.weight_file(n).is_file()}


# -- the information cap ----------------------------------------------------------------

def test_cap_fixes_the_signal_power_so_the_encoder_cannot_scale_the_noise_away(tiny_config):
    # the signal's power before the device's noise, every number sent
    cfg = tiny_config(*ROBUST, "privacy.normalize_features=true", "model.upload_positions=0",
                      "privacy.feature_noise=0")
    torch.manual_seed(0)
    enc = build_models(cfg).encoder.eval()
    x = torch.rand(6, 3, 32, 32)
    with torch.no_grad():
        z = enc(x)
        rms = z.pow(2).mean((1, 2, 3)).sqrt()
        assert torch.allclose(rms, torch.ones(6), atol=1e-4)
        # what a defence trained to "shout over the noise" would do: scale its last layer up
        enc.stage("bottleneck").net[1].weight.mul_(100.0)
        enc.stage("bottleneck").net[1].bias.mul_(100.0)
        assert torch.allclose(enc(x).pow(2).mean((1, 2, 3)).sqrt(), torch.ones(6), atol=1e-4)
    assert (z < 0).any()  # the capped bottleneck is linear: signed values


def test_capacity_bound_is_the_gaussian_channel_formula():
    assert capacity_bits(256, 1.0) == pytest.approx(128.0)
    assert capacity_bits(100, 2.0) == pytest.approx(50 * math.log2(1.25))
    assert capacity_bits(100, 0.0) is None
    z = torch.randn(3, 2, 4, 4) * torch.tensor([0.1, 5.0, 30.0]).view(3, 1, 1, 1)
    assert torch.allclose(unit_rms(z).pow(2).mean((1, 2, 3)), torch.ones(3), atol=1e-4)


def _planted(n: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """Images whose left half is brighter when the attribute is 1 (a signal any encoder
    passes on), plus per-image noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = 0.3 + 0.2 * torch.rand(n, 3, 32, 32, generator=g)
    x[:, :, :, :16] += 0.25 * y.view(n, 1, 1, 1)
    return x.clamp(0, 1), y.numpy()


def test_a_fresh_probe_reads_less_through_the_cap_than_without_it(tiny_config):
    """Same weights, same images: the uncapped features (unit RMS, no noise) give the
    audit's probe the planted attribute; through the cap (noise of std 3: at most 0.08 bits
    per number) the same probe does clearly worse."""
    cfg = tiny_config(*ROBUST, "privacy.normalize_features=true", "privacy.feature_noise=3.0")
    torch.manual_seed(0)
    enc = build_models(cfg).encoder.eval()
    scores = {}
    for std in (0.0, 3.0):
        enc.noise_std = std
        torch.manual_seed(1)
        feats = {}
        for part, seed in (("train", 0), ("test", 1)):
            x, y = _planted(400 if part == "train" else 300, seed)
            with torch.no_grad():
                feats[part] = FeatureSet(features=enc(x), images=x, attributes={"a": y})
        probe = AttributeProbe(tuple(feats["train"].features.shape[1:]),
                               FitSettings(max_epochs=15, patience=4, progress=False))
        probe.fit(feats["train"], "a")
        scores[std] = balanced_accuracy(feats["test"].attributes["a"],
                                        probe.infer(feats["test"].features), 0.5)
    assert scores[0.0] > 0.9
    assert scores[3.0] < scores[0.0] - 0.1


# -- the game ---------------------------------------------------------------------------

def _ctx(cfg) -> StepContext:
    torch.manual_seed(0)
    models = build_models(cfg)
    opts = robust.robust_optimizers(models, "adversarial", 1e-3, 1e-3)
    return StepContext(cfg, models, opts, settings_for_size(32, 32), torch.zeros(3, 32, 32))


def _batch(seed: int, n: int = 8) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.rand(n, 3, 32, 32, generator=g),
                 torch.randint(0, 2, (n,), generator=g).float(),
                 torch.tensor([[0, 1], [1, 0]] * (n // 2)).float())


def test_the_attackers_are_the_audits_architectures_in_an_ensemble(tiny_config):
    cfg = tiny_config(*ROBUST)
    models = build_models(cfg)
    for ens in models.adversaries.values():
        assert isinstance(ens, Ensemble) and len(ens.members) == 2
        assert type(ens.members[0].net).__name__ == "ProbeNetwork"
    assert type(models.reconstructor.net).__name__ == "InversionNetwork"


def test_an_encoder_step_updates_e_and_c_only_and_an_attacker_step_the_attackers_only(
        tiny_config):
    ctx = _ctx(tiny_config(*ROBUST))

    def snap():
        return {n: torch.cat([p.detach().flatten().clone() for p in m.parameters()])
                for n, m in ctx.models.named().items()}

    before = snap()
    robust.encoder_step(ctx, _batch(0), torch.full((1, 3, 32, 32), 0.5))
    mid = snap()
    assert {n for n in before if not torch.equal(before[n], mid[n])} == {"encoder", "classifier"}
    robust.attacker_step(ctx, _batch(1))
    after = snap()
    assert {n for n in mid if not torch.equal(mid[n], after[n])} == {"adversaries",
                                                                      "reconstructor"}


def test_the_encoder_step_computes_no_attacker_weight_gradients_and_leaves_them_trainable(
        tiny_config):
    ctx = _ctx(tiny_config(*ROBUST))
    attackers = [*ctx.models.adversaries.parameters(), *ctx.models.reconstructor.parameters()]
    robust.encoder_step(ctx, _batch(0), torch.full((1, 3, 32, 32), 0.5))
    assert all(p.grad is None for p in attackers)
    assert all(p.grad is not None for p in ctx.models.encoder.parameters() if p.requires_grad)
    assert all(p.requires_grad for p in attackers)  # the attacker step still trains them
    robust.attacker_step(ctx, _batch(1))
    assert all(p.grad is not None for p in ctx.models.reconstructor.parameters())


def test_bounded_objectives_give_no_reward_past_an_uninformed_attacker():
    half = torch.zeros(6)
    y = torch.tensor([0, 1, 0, 1, 1, 1.0])
    assert robust.balanced_bce(half, y).item() == pytest.approx(math.log(2), abs=1e-6)
    flipped = torch.where(y > 0, -8.0, 8.0)  # confidently wrong: still reveals y
    assert robust.balanced_bce(flipped, y).item() > math.log(2)
    # capped_ce: relu(log 2 - CE) is 0 for the uninformed and the flipped attacker alike
    assert torch.relu(math.log(2) - robust.balanced_bce(flipped, y)).item() == 0.0
    right = torch.where(y > 0, 3.0, -3.0)
    assert torch.relu(math.log(2) - robust.balanced_bce(right, y)).item() > 0.5


def test_reconstruction_term_is_zero_at_the_mean_face_and_beyond(tiny_config):
    """E is pushed toward the mean face and never past it: a decoder that outputs the mean
    face or an inverted face earns E nothing; only a decoder that gets closer costs."""
    from deepobfuscator.privacy import ms_ssim

    s = settings_for_size(32, 32)
    x = _batch(0).x
    mean = x.mean(0, keepdim=True).expand_as(x)
    floor = ms_ssim(mean, x, s, reduction="none")
    for recon, costs in ((mean, False), (1 - x, False), (0.7 * x + 0.3 * mean, True)):
        term = torch.relu(ms_ssim(recon, x, s, reduction="none") - floor).mean()
        assert (term.item() > 0.01) == costs


def _counting(monkeypatch):
    calls = {"attacker": [], "encoder": 0}
    real_a, real_e = robust.attacker_step, robust.encoder_step

    def attacker(ctx, batch):
        calls["attacker"].append(batch.x[0, 0, 0, :4].clone())
        return real_a(ctx, batch)

    def encoder(ctx, batch, mean_face):
        calls["encoder"] += 1
        calls.setdefault("enc_batches", []).append(batch.x[0, 0, 0, :4].clone())
        return real_e(ctx, batch, mean_face)

    monkeypatch.setattr(robust, "attacker_step", attacker)
    monkeypatch.setattr(robust, "encoder_step", encoder)  # the method reads both at run time
    return calls


@pytest.mark.parametrize("k", [1, 3])
def test_attackers_take_k_steps_on_fresh_batches_per_encoder_step(tmp_path, tiny_config,
                                                                  monkeypatch, k):
    cfg = tiny_config(*ROBUST, f"privacy.robust.adversary_steps={k}",
                      "train.adversaries.epochs=0", "train.adversarial.epochs=2")
    calls = _counting(monkeypatch)
    run = train(cfg, tmp_path / "run", progress=False)
    n_train = json.loads(RunPaths(run).info.read_text())["splits"]["defender_train"]["images"]
    per_epoch = n_train // 16
    assert calls["encoder"] == 2 * per_epoch
    # k per encoder step, plus the refresh's pre-training at the second epoch
    assert len(calls["attacker"]) == k * calls["encoder"] + cfg.privacy.robust.refresh_steps
    enc = {tuple(t.tolist()) for t in calls["enc_batches"]}
    first_fresh = calls["attacker"][:k]
    assert tuple(first_fresh[0].tolist()) != tuple(calls["enc_batches"][0].tolist())
    assert len(enc) > 1


def test_refresh_restarts_one_member_per_epoch(tiny_config):
    cfg = tiny_config(*ROBUST)
    ctx = _ctx(cfg)
    robust.attacker_step(ctx, _batch(1))
    ens = ctx.models.adversaries["Male"]
    before = [torch.cat([p.flatten() for p in m.parameters()]).clone() for m in ens.members]
    assert robust.refresh_member(ctx, ctx.models, 0) is None  # never before E has moved
    idx = robust.refresh_member(ctx, ctx.models, 3)
    assert idx == 1
    after = [torch.cat([p.flatten() for p in m.parameters()]) for m in ens.members]
    assert torch.equal(before[0], after[0]) and not torch.equal(before[1], after[1])
    assert all(p not in ctx.optimizers["attackers"].state for p in ens.members[1].parameters())


def test_step_matched_control_trains_the_same_encoder_steps_without_attackers(
        tmp_path, tiny_config, monkeypatch):
    cfg = tiny_config(*ROBUST, "privacy.robust.adversary_steps=0",
                      "privacy.robust.attribute_weight=0", "privacy.robust.reconstruction_weight=0")
    calls = _counting(monkeypatch)
    run = train(cfg, tmp_path / "ctl", progress=False)
    info = json.loads(RunPaths(run).info.read_text())
    assert info["stages"] == ["task", "adversarial"]
    assert calls["attacker"] == [] and calls["encoder"] == 2 * (
        info["splits"]["defender_train"]["images"] // 16)


@pytest.mark.parametrize(("cap", "extra"), [([], []), (CAP, []),
                                            ([], ["privacy.robust.info_weight=0.5"])],
                         ids=["uncapped", "capped", "info-term"])
def test_robust_run_from_a_baselines_task_stage_equals_one_from_scratch(tmp_path, tiny_config,
                                                                        cap, extra):
    cfg = tiny_config(*ROBUST, *cap, *extra, "train.adversarial.epochs=1",
                      "train.adversaries.epochs=1")
    base = train(tiny_config("privacy.method=none", "model.bottleneck=2", *cap),
                 tmp_path / "base", progress=False)
    assert start_from_baseline(cfg, tmp_path / "reused", base)
    reused = _weights(train(cfg, tmp_path / "reused", progress=False))
    scratch = _weights(train(cfg, tmp_path / "scratch", progress=False))
    for net in scratch:
        for key in scratch[net]:
            assert torch.equal(scratch[net][key], reused[net][key]), f"{net}.{key} differs"


def test_audit_reads_the_ensemble_as_the_training_adversary(tmp_path, tiny_config):
    cfg = tiny_config(*ROBUST, "train.adversarial.epochs=1")
    run = train(cfg, tmp_path / "run", progress=False)
    _, models = load_run(run)
    from deepobfuscator.audit.features import training_adversary_scores

    z = models.encoder(torch.rand(5, 3, 32, 32))
    own = training_adversary_scores(models, z.detach(), ["Male", "Young"], torch.device("cpu"))
    assert set(own) == {"Male", "Young"} and all(v.shape == (5,) for v in own.values())
    assert all(((v >= 0) & (v <= 1)).all() for v in own.values())


def test_only_methods_with_attackers_are_compared_with_their_own(tiny_config):
    """The audit compares a run's own adversaries with the fresh attackers only when the run
    trained some: not the step-matched control, whose attackers never learnt."""
    from deepobfuscator.methods import trains_attackers

    control = ["privacy.robust.adversary_steps=0", "privacy.robust.attribute_weight=0",
               "privacy.robust.reconstruction_weight=0"]
    assert trains_attackers(tiny_config(*ROBUST))
    assert trains_attackers(tiny_config(*PAPER))
    assert not trains_attackers(tiny_config(*ROBUST, *control))
    assert not trains_attackers(tiny_config("privacy.method=none"))


# -- the information term (TIPRDC, MaSS) ------------------------------------------------

INFO = ["privacy.robust.info_weight=0.5", "privacy.robust.info_temperature=0.2"]


def test_info_nce_has_its_known_answers():
    from deepobfuscator.models.critics import info_nce

    b = 8
    eye = torch.eye(b, 16)[:, torch.randperm(16)]  # matched pairs equal, the rest orthogonal
    assert info_nce(eye, eye, 0.01).item() < 1e-6
    # log(1 + (B - 1) e^(-1/t)) at a moderate temperature: the closed form
    assert info_nce(eye, eye, 0.5).item() == pytest.approx(math.log(1 + 7 * math.exp(-2)),
                                                           rel=1e-5)
    same = torch.ones(b, 16)  # nothing tells the photos apart: chance among B
    assert info_nce(same, 3 * same, 0.1).item() == pytest.approx(math.log(b), rel=1e-6)
    # scale-free (cosine similarities), and a mismatch costs more than chance
    assert info_nce(5 * eye, eye, 0.1).item() == pytest.approx(info_nce(eye, eye, 0.1).item())
    assert info_nce(eye, eye.roll(1, 0), 0.1).item() > math.log(b)


def test_the_info_term_adds_critics_only_when_on_and_leaves_the_rest_as_it_was(tiny_config):
    off, on = tiny_config(*ROBUST), tiny_config(*ROBUST, *INFO)
    assert off.fingerprint() == tiny_config(*ROBUST, "privacy.robust.info_weight=0").fingerprint()
    assert off.fingerprint() != on.fingerprint()
    # a config saved before the keys existed reads them as off, with the same fingerprint
    from deepobfuscator.config import config_from_dict, load_config

    d = load_config("robust").to_dict()
    del d["schema"]  # written before versions were recorded, and before the two keys
    del d["privacy"]["robust"]["info_weight"], d["privacy"]["robust"]["info_temperature"]
    assert config_from_dict(d).privacy.robust.info_weight == 0
    assert config_from_dict(d).fingerprint() == load_config("robust").fingerprint()
    built = {}
    for name, cfg in (("off", off), ("on", on)):
        torch.manual_seed(0)
        built[name] = (build_models(cfg), torch.get_rng_state())
    m_off, m_on = built["off"][0], built["on"][0]
    assert m_off.critics is None and list(m_off.named()) == ["encoder", "classifier",
                                                             "adversaries", "reconstructor"]
    assert list(m_on.named())[-1] == "critics"
    # the critics are drawn aside: every other network and the RNG after them are the same,
    # so the task stage trains identically
    assert torch.equal(built["off"][1], built["on"][1])
    for net in ("encoder", "classifier", "adversaries", "reconstructor"):
        a, b = m_off.named()[net].state_dict(), m_on.named()[net].state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), net
    # E's optimizer is as before (one group) without the term; the critics join it with it
    assert len(robust.robust_optimizers(m_off, "adversarial", 1e-3, 1e-3)[
        "encoder_classifier"].param_groups) == 1
    groups = robust.robust_optimizers(m_on, "adversarial", 1e-3, 1e-3)[
        "encoder_classifier"].param_groups
    assert [len(g["params"]) for g in groups][1] == len(list(m_on.critics.parameters()))
    # task-continuation never reads the key: no critics
    assert build_models(tiny_config("privacy.method=task-continuation", *INFO)).critics is None


def test_an_encoder_step_with_the_info_term_trains_the_critics_and_moves_e(tiny_config):
    """One step of E (and C, and the critics) with the term against one without it, from
    the same weights on the same batch: E ends elsewhere, the critics have moved, and no
    attacker has."""
    no_attackers = ["privacy.robust.attribute_weight=0", "privacy.robust.reconstruction_weight=0"]
    ends = {}
    for name, more in (("off", []), ("on", INFO)):
        ctx = _ctx(tiny_config(*ROBUST, *no_attackers, *more))
        before = {n: torch.cat([p.detach().flatten().clone() for p in m.parameters()])
                  for n, m in ctx.models.named().items()}
        out = robust.encoder_step(ctx, _batch(0), torch.full((1, 3, 32, 32), 0.5))
        after = {n: torch.cat([p.detach().flatten() for p in m.parameters()])
                 for n, m in ctx.models.named().items()}
        ends[name] = after["encoder"].clone()
        moved = {n for n in before if not torch.equal(before[n], after[n])}
        if name == "on":
            assert moved == {"encoder", "classifier", "critics"}
            assert 0 < out["info_loss"] < 2 * math.log(8)
        else:
            assert moved == {"encoder", "classifier"} and "info_loss" not in out
    assert not torch.equal(ends["off"], ends["on"])


def test_a_run_with_the_info_term_records_it_and_resumes_to_the_same_weights(
        tmp_path, tiny_config, monkeypatch):
    """Trained end to end (checkpoints every batch), killed in the middle of its last epoch
    and resumed: every network, the critics included, ends bit for bit where an
    uninterrupted run does, and the history has the term's loss."""
    from resume_helpers import assert_resumes_bit_for_bit

    cfg = tiny_config(*ROBUST, *INFO, "train.checkpoint_every_s=0", "train.adversarial.epochs=1",
                      "privacy.robust.adversary_steps=1")
    whole_run = assert_resumes_bit_for_bit(cfg, tmp_path, monkeypatch)
    assert (RunPaths(whole_run).weight_file("critics")).is_file()  # compared with the rest
    rows = [json.loads(x) for x in RunPaths(whole_run).metrics.read_text().splitlines()]
    game = [r for r in rows if r["stage"] == "adversarial"]
    assert game and all(0 < r["info_loss"] for r in game)
    assert not [r for r in rows if r["stage"] != "adversarial" and "info_loss" in r]
    _, models = load_run(whole_run)  # the critics load with the rest
    assert models.critics is not None
