"""model.upload_positions: when training ends, the K numbers with the most signal power
are kept and the rest are not sent: a subset of the full upload, chosen without changing
a weight. The export packs the K numbers as (1, 1, K) and the cloud model scatters them
back."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from deepobfuscator import wire
from deepobfuscator.config import (
    ConfigError,
    config_from_dict,
    load_config,
    no_privacy_overrides,
)
from deepobfuscator.defences import sent_positions
from deepobfuscator.defences import sparse_upload as sparse_mod
from deepobfuscator.defences.cap import capacity_bits
from deepobfuscator.defences.sparse_upload import choose_upload_positions
from deepobfuscator.deploy.export import export_run, load_export
from deepobfuscator.models import build_models, feature_shape
from deepobfuscator.models.budget import phone_budget
from deepobfuscator.models.upload import kept_positions, unpack_numpy
from deepobfuscator.runs import load_run
from deepobfuscator.training import finish as finish_mod
from deepobfuscator.training import train
from deepobfuscator.training import trainer as trainer_mod
from deepobfuscator.training.reuse import shares_task_stage, start_from_baseline

K = 8
# the default's parts on the tiny model: a 1-channel bottleneck (8 x 8 = 64 numbers at 32
# px), the cap, a gain per position, the task continuation
SPARSE = ["model.bottleneck=1", "privacy.normalize_features=true", "privacy.feature_noise=4",
          "model.position_gain=10", "privacy.method=task-continuation",
          "train.task.epochs=2", "train.adversarial.epochs=2", "train.checkpoint_every_s=0"]


def test_config_bounds(tiny_config):
    with pytest.raises(ConfigError, match="must be >= 0"):
        tiny_config(*SPARSE, "model.upload_positions=-1")
    # a map of at most K numbers is sent whole: no mask, the full budget
    for k in (64, 100):
        whole = tiny_config(*SPARSE, f"model.upload_positions={k}")
        assert sent_positions(whole) == 0 and build_models(whole).encoder.stage("upload") is None
        assert phone_budget(whole).upload_numbers == 64
    # a saved config without the key (a run from before it existed) is the run with 0
    zero = tiny_config(*SPARSE, "model.upload_positions=0")
    before = zero.to_dict()
    del before["schema"], before["model"]["upload_positions"]
    assert config_from_dict(before).fingerprint() == zero.fingerprint()
    assert "model.upload_positions=0" in no_privacy_overrides()


def test_cloud_refit_moves_only_the_cloud_and_fits_the_sparse_upload(tmp_path, tiny_config,
                                                                  monkeypatch):
    """train.upload_tune_epochs: after the choice C alone trains on the masked upload.
    E (so every uploaded number) and the other networks stay those of the run without it,
    each re-fit step is a cloud step, and C's loss on what the phone now sends goes down."""
    from deepobfuscator.data.splits import make_splits
    from deepobfuscator.privacy import bce_logits

    steps = []
    real = finish_mod.classifier_step
    monkeypatch.setattr(finish_mod, "classifier_step",
                        lambda ctx, batch: steps.append(len(batch.x)) or real(ctx, batch))
    # a cap loose enough for the tiny model to learn the task
    base = [*SPARSE, f"model.upload_positions={K}", "train.upload_tune_lr=1e-3",
            "privacy.feature_noise=0.5", "data.synth_images=480", "train.task.epochs=3"]
    off = train(tiny_config(*base, "train.upload_tune_epochs=0"), tmp_path / "off",
                progress=False)
    assert steps == []
    cfg = tiny_config(*base, "train.upload_tune_epochs=3")
    on = train(cfg, tmp_path / "on", progress=False)
    n_train = len(make_splits(cfg)["defender_train"])
    assert len(steps) == 3 * (n_train // cfg.train.adversarial.batch_size)
    _, a = load_run(off)
    _, b = load_run(on)
    for name in ("encoder", "reconstructor", "adversaries"):
        want, got = a.named()[name].state_dict(), b.named()[name].state_dict()
        assert all(torch.equal(want[k], got[k]) for k in want), name
    assert torch.equal(a.encoder.stage("upload").mask, b.encoder.stage("upload").mask)
    assert any(not torch.equal(v, b.classifier.state_dict()[k])
               for k, v in a.classifier.state_dict().items())
    train_split = make_splits(cfg)["defender_train"]
    x = torch.from_numpy(train_split.images).permute(0, 3, 1, 2).float() / 255.0
    y = torch.from_numpy(train_split.attribute(cfg.data.task)).float()
    losses = []
    for models in (a, b):
        torch.manual_seed(0)  # the same noise draws for both
        with torch.no_grad():
            losses.append(float(bce_logits(models.classifier(models.encoder(x)), y)))
    assert losses[1] < losses[0]
    history = [json.loads(line) for line in (on / "metrics.jsonl").read_text().splitlines()]
    assert history[-1]["stage"] == "upload" and "tune_task_loss" in history[-1]
    assert "upload" in json.loads((on / "run.json").read_text())["stage_seconds"]
    # a run saved before the keys existed had no re-fit: read back as epochs 0, same hash
    saved = cfg.to_dict()
    del saved["schema"]
    for key in ("upload_tune_epochs", "upload_tune_lr"):
        del saved["train"][key]
    old = config_from_dict(saved)
    assert old.train.upload_tune_epochs == 0
    assert old.fingerprint() == tiny_config(*base, "train.upload_tune_epochs=0",
                                            "train.upload_tune_lr=1e-4").fingerprint()
    with pytest.raises(ConfigError, match="upload_tune_epochs"):
        tiny_config(*base, "train.upload_tune_epochs=-1")


def test_budget_counts_only_the_sent_numbers():
    full = phone_budget(load_config("cpu", ["model.upload_positions=0"]))
    sparse = phone_budget(load_config("cpu", ["model.upload_positions=16"]))
    assert (full.upload_numbers, sparse.upload_numbers) == (256, 16)
    assert sparse.upload_bytes == wire.encoded_size((1, 1, 1, 16)) == 32 + 16
    assert full.upload_bytes == 32 + 256
    assert (sparse.phone_macs, sparse.cloud_macs) == (full.phone_macs, full.cloud_macs)
    # the 16 numbers carry the whole power: 8 log2(1 + 256 / (16 * 16)) = 8 bits
    assert sparse.info_cap_bits == pytest.approx(8.0)
    assert sparse.info_cap_bits < full.info_cap_bits == pytest.approx(capacity_bits(256, 4))


def _encoder(tiny_config, *extra):
    cfg = tiny_config(*SPARSE, f"model.upload_positions={K}", *extra)
    torch.manual_seed(0)
    return cfg, build_models(cfg).encoder


def test_an_unchosen_mask_changes_nothing(tiny_config):
    """All ones until training ends: training is that of a run without it."""
    _, plain = _encoder(tiny_config, "model.upload_positions=0")
    _, sparse = _encoder(tiny_config)
    sparse.load_state_dict(plain.state_dict())  # no mask in there: it loads as all ones
    assert torch.equal(sparse.stage("upload").mask, torch.ones_like(sparse.stage("upload").mask))
    x = torch.rand(4, 3, 32, 32)
    for net in (plain, sparse):
        net.train()
    torch.manual_seed(1)
    a = plain(x)
    torch.manual_seed(1)
    assert torch.equal(sparse(x), a)  # noise included


def test_the_chosen_positions_are_the_strongest_and_the_rest_are_exact_zeros(tiny_config):
    _, enc = _encoder(tiny_config)
    planted = [5, 17, 18, 40, 41, 42, 60, 63]
    with torch.no_grad():
        enc.stage("gain").delta.fill_(-0.099)  # gain 0.01 everywhere ...
        enc.stage("gain").delta.view(-1)[planted] = 0.9  # ... and 10 on the planted positions
    images = torch.randint(0, 256, (64, 32, 32, 3), dtype=torch.uint8)
    choose_upload_positions(enc, images, K)
    assert kept_positions(enc).tolist() == planted
    assert enc.noise_std == 4.0 and enc.training  # restored after choosing
    z = enc(torch.rand(6, 3, 32, 32)).flatten(1)
    dropped = np.setdiff1d(np.arange(64), planted)
    assert torch.all(z[:, dropped] == 0)  # no signal and no noise where nothing is sent


def test_the_sent_numbers_are_exactly_those_of_the_full_upload(tiny_config):
    """The mask comes after the cap and the noise: the sparse upload is a subset of the
    full one (same weights, same noise draw), so it cannot tell an attacker more."""
    _, plain = _encoder(tiny_config, "model.upload_positions=0")
    _, sparse = _encoder(tiny_config)
    sparse.load_state_dict(plain.state_dict())
    choose_upload_positions(sparse, torch.randint(0, 256, (32, 32, 32, 3), dtype=torch.uint8), K)
    mask = sparse.stage("upload").mask
    assert int(mask.sum()) == K
    x = torch.rand(4, 3, 32, 32)
    torch.manual_seed(3)
    full = plain(x)
    torch.manual_seed(3)
    assert torch.equal(sparse(x), full * mask)


@pytest.mark.parametrize("method", ["task-continuation", "none"])
def test_training_chooses_once_at_the_end_and_changes_no_weight(tmp_path, tiny_config, monkeypatch,
                                                        method):
    calls = []
    real = sparse_mod.choose_upload_positions
    task_steps = []
    real_step = trainer_mod.task_step

    def spy(encoder, images, k):
        calls.append((k, len(task_steps)))
        mask = encoder.stage("upload").mask
        assert torch.equal(mask, torch.ones_like(mask))
        return real(encoder, images, k)

    def counting(ctx, batch):
        task_steps.append(1)
        return real_step(ctx, batch)

    monkeypatch.setattr(sparse_mod, "choose_upload_positions", spy)
    monkeypatch.setattr(trainer_mod, "task_step", counting)
    no_refit = "train.upload_tune_epochs=0"
    cfg = tiny_config(*SPARSE, f"model.upload_positions={K}", f"privacy.method={method}",
                      no_refit)
    run = train(cfg, tmp_path / "run", progress=False)
    assert calls == [(K, len(task_steps))]  # once, after the last step
    # choosing changes no weight: everything but the mask is the run without the key
    plain = train(tiny_config(*SPARSE, f"privacy.method={method}", no_refit,
                              "model.upload_positions=0"), tmp_path / "plain", progress=False)
    _, a = load_run(plain)
    _, b = load_run(run)
    for name, net in a.named().items():
        got = b.named()[name].state_dict()
        for key, value in net.state_dict().items():
            assert torch.equal(value, got[key]), f"{name}.{key}"
    assert set(b.encoder.state_dict()) - set(a.encoder.state_dict()) == {"stages.upload.mask"}
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert history[-1]["stage"] == "upload" and history[-1]["upload_positions"] == K
    _, models = load_run(run)
    kept = kept_positions(models.encoder)
    assert len(kept) == K
    models.encoder.train()
    z = models.encoder(torch.rand(4, 3, 32, 32)).flatten(1)
    assert torch.all(z[:, np.setdiff1d(np.arange(64), kept)] == 0)
    assert json.loads((run / "run.json").read_text())["budget"]["upload_numbers"] == K


def test_a_killed_run_resumes_to_the_same_weights_and_positions(tmp_path, tiny_config,
                                                                  monkeypatch):
    cfg = tiny_config(*SPARSE, f"model.upload_positions={K}")
    whole = train(cfg, tmp_path / "whole", progress=False)
    real = trainer_mod._Loop.epoch_steps

    def counting(self, ctx, stage, s_idx, epoch, scfg):
        step = real(self, ctx, stage, s_idx, epoch, scfg)

        def wrapped(b, batch):
            if stage == "adversarial" and epoch == 1 and b == 2:
                raise KeyboardInterrupt  # mid continuation
            return step(b, batch)

        return wrapped

    monkeypatch.setattr(trainer_mod._Loop, "epoch_steps", counting)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "killed", progress=False)
    monkeypatch.setattr(trainer_mod._Loop, "epoch_steps", real)
    resumed = train(cfg, tmp_path / "killed", progress=False)
    _, a = load_run(whole)
    _, b = load_run(resumed)
    for name, net in a.named().items():
        for (k, va), vb in zip(net.state_dict().items(), b.named()[name].state_dict().values(),
                               strict=True):
            assert torch.equal(va, vb), f"{name}.{k}"


def test_a_task_stage_without_the_key_is_reused_bit_for_bit(tmp_path, tiny_config):
    stage1 = tiny_config(*SPARSE, "privacy.method=none", "train.adversarial.epochs=2")
    sparse = tiny_config(*SPARSE, f"model.upload_positions={K}")
    assert shares_task_stage(sparse, stage1)
    src = train(stage1, tmp_path / "stage1", progress=False)
    assert start_from_baseline(sparse, tmp_path / "reused", src)
    reused = train(sparse, tmp_path / "reused", progress=False)
    fresh = train(sparse, tmp_path / "fresh", progress=False)
    _, a = load_run(reused)
    _, b = load_run(fresh)
    for va, vb in zip(a.encoder.state_dict().values(), b.encoder.state_dict().values(),
                      strict=True):
        assert torch.equal(va, vb)


@pytest.fixture(scope="module")
def sparse_export(tmp_path_factory):
    from conftest import TINY, _session_cache_env

    mp = _session_cache_env(tmp_path_factory)
    try:
        cfg = load_config("cpu", [*TINY, *SPARSE, f"model.upload_positions={K}"])
        root = tmp_path_factory.mktemp("sparse")
        run = train(cfg, root / "run", progress=False)
        return run, export_run(run, root / "export", parity_images=8, mobile=False)
    finally:
        mp.undo()


def test_choose_upload_is_the_run_trained_with_that_count(sparse_export, tmp_path):
    """`deepobfuscator choose-upload RUN --positions 4`: a new folder holding what training
    with model.upload_positions=4 gives, bit for bit, without retraining; the source is
    left as it was."""
    from conftest import TINY

    from deepobfuscator.cli import main
    from deepobfuscator.errors import RunError
    from deepobfuscator.training.reuse import with_upload

    run, _ = sparse_export
    before = {p.name: p.read_bytes() for p in sorted((run / "weights").iterdir())}
    assert main(["choose-upload", str(run), "--positions", "4", "--out",
                 str(tmp_path / "k4"), "--quiet"]) == 0
    out = tmp_path / "k4"
    assert before == {p.name: p.read_bytes() for p in sorted((run / "weights").iterdir())}
    scratch = train(load_config("cpu", [*TINY, *SPARSE, "model.upload_positions=4"]),
                    tmp_path / "scratch", progress=False)
    (_, chosen), (_, trained), (_, source) = load_run(out), load_run(scratch), load_run(run)
    for name, net in trained.named().items():
        got = chosen.named()[name].state_dict()
        for key, value in net.state_dict().items():
            assert torch.equal(value, got[key]), f"{name}.{key}"
    assert set(kept_positions(chosen.encoder)) < set(kept_positions(source.encoder))
    assert json.loads((out / "run.json").read_text())["budget"]["upload_numbers"] == 4
    assert not list(tmp_path.glob(".*partial"))  # built beside, moved into place
    assert with_upload(run, out, 4) == out  # again: nothing to do
    # --refit-epochs 0: the same phone, and the cloud as the last stage left it
    assert main(["choose-upload", str(run), "--positions", "4", "--refit-epochs", "0",
                 "--out", str(tmp_path / "k4-as-trained"), "--quiet"]) == 0
    _, as_trained = load_run(tmp_path / "k4-as-trained")
    from deepobfuscator.training.checkpoint import load_checkpoint

    last = load_checkpoint(run / "checkpoint.pt")["models"]["classifier"]
    assert all(torch.equal(v, last[k]) for k, v in as_trained.classifier.state_dict().items())
    assert torch.equal(as_trained.encoder.stage("upload").mask, chosen.encoder.stage("upload").mask)
    assert not all(torch.equal(v, last[k]) for k, v in chosen.classifier.state_dict().items())
    with pytest.raises(RunError, match="already exists"):
        with_upload(run, out, 2)
    with pytest.raises(ConfigError, match="must be >= 0"):
        with_upload(run, tmp_path / "negative", -1)
    unfinished = tmp_path / "unfinished"
    shutil.copytree(run, unfinished)
    (unfinished / "run.json").unlink()
    with pytest.raises(RunError, match="not a finished run"):
        with_upload(unfinished, tmp_path / "from-unfinished", 4)


def test_the_fewest_positions_halve_until_the_task_score_falls_short():

    from deepobfuscator.defences.sparse_upload import fewest_positions

    mask = torch.ones(1, 1, 4, 4)
    power = torch.arange(16.0).flip(0).view(1, 4, 4)  # position 0 strongest, then 1, ...

    def score():  # the task needs positions 0 and 1; 2 helps a little
        m = mask.flatten()
        return 0.8 + 0.1 * float(m[0] * m[1]) + 0.003 * float(m[2])

    k, tried = fewest_positions(mask, power, 8, score, tolerance=0.005)
    assert k == 2 and list(tried) == ["all", "8", "4", "2", "1"]
    assert tried["2"] == pytest.approx(tried["all"] - 0.003)
    assert torch.equal(mask, torch.ones(1, 1, 4, 4))  # left at all ones
    assert fewest_positions(mask, power, 8, score, tolerance=0.001)[0] == 4  # 2 costs 0.003
    # it stops at the first count that falls short, even if a smaller one would pass
    calls = iter([0.9, 0.9, 0.7, 0.95])
    assert fewest_positions(mask, power, 8, lambda: next(calls), 0.01) == \
        (8, {"all": 0.9, "8": 0.9, "4": 0.7})
    # the most it may send falls short: it sends that many anyway
    assert fewest_positions(mask, power, 8, iter([0.9, 0.5]).__next__, 0.01)[0] == 8


def test_choose_upload_auto_records_how_it_chose(sparse_export, tmp_path, capsys):
    from deepobfuscator.cli import main

    run, _ = sparse_export
    out = tmp_path / "auto"
    # a tolerance no count can miss: it halves to a single number
    assert main(["choose-upload", str(run), "--positions", "auto", "--most", "8",
                 "--tolerance", "0.99", "--out", str(out), "--quiet"]) == 0
    assert "the fewest within 0.99 of every number: 1" in capsys.readouterr().out
    why = json.loads((out / "upload_choice.json").read_text())
    assert (why["most"], why["tolerance"], why["source"]) == (8, 0.99, str(run))
    assert list(why["val_task_auc"]) == ["all", "8", "4", "2", "1"]
    assert json.loads((out / "run.json").read_text())["budget"]["upload_numbers"] == 1
    assert main(["choose-upload", str(run), "--positions", "many", "--out",
                 str(tmp_path / "x")]) == 2
    assert "--positions 'many': give a count or 'auto'" in capsys.readouterr().err
    assert main(["choose-upload", str(run), "--positions", "auto", "--most", "0", "--out",
                 str(tmp_path / "y")]) == 2
    assert "give a count >= 1" in capsys.readouterr().err
    assert main(["choose-upload", str(run), "--positions", "auto", "--most", "64", "--out",
                 str(tmp_path / "z")]) == 2  # the map holds 64 numbers
    assert "no more than 64 numbers: nothing to drop" in capsys.readouterr().err


def test_the_export_sends_k_numbers_and_the_cloud_answers_as_pytorch(sparse_export):
    run, export = sparse_export
    cfg, models = load_run(run)
    bundle = load_export(export)
    m = bundle.manifest
    kept = kept_positions(models.encoder)
    assert m["features"]["shape"] == [1, 1, K]
    assert m["features"]["positions"]["flat_indices"] == kept.tolist()
    assert m["features"]["positions"]["of_shape"] == list(feature_shape(cfg))
    assert m["wire"]["bytes_per_image"] == 32 + K == m["budget"]["upload_bytes"]
    cap = capacity_bits(64, 4, K)  # 4 log2(1 + 64 / (8 * 16)) = 2.3
    assert f"at most {cap:.1f} bits" in m["features"]["information_cap"]
    images = np.random.default_rng(0).random((5, 3, 32, 32), dtype=np.float32)
    phone = ort.InferenceSession(str(bundle.model_path("obfuscator")))
    cloud = ort.InferenceSession(str(bundle.model_path("classifier")))
    sent = phone.run(None, {"image": images})[0]
    assert sent.shape == (5, 1, 1, K)
    body = wire.encode(sent + np.float32(4.0) * np.random.default_rng(1).standard_normal(
        sent.shape).astype(np.float32))
    assert len(body) == 5 * K + 24 + 8 * 5  # header, a scale and zero point per image
    got = wire.decode(body, expected_shape=(1, 1, K))
    models.encoder.eval()
    models.encoder.noise_std = 0.0
    with torch.no_grad():
        full = models.encoder(torch.from_numpy(images)).numpy()
        np.testing.assert_allclose(unpack_numpy(sent, kept, full.shape[1:]), full, atol=1e-5)
        want = torch.sigmoid(models.classifier.eval()(
            torch.from_numpy(unpack_numpy(got, kept, full.shape[1:])))).numpy()
    answer = cloud.run(None, {"features": got})[0].reshape(-1)
    np.testing.assert_allclose(answer, want, atol=1e-5)


def test_a_damaged_positions_field_is_refused(sparse_export, tmp_path):
    import shutil

    _, export = sparse_export
    bad = tmp_path / "bad"
    shutil.copytree(export, bad)
    m = json.loads((bad / "manifest.json").read_text())
    m["features"]["positions"]["flat_indices"][0] = m["features"]["positions"][
        "flat_indices"][1]  # a repeated index
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(Exception, match="features.positions is malformed"):
        load_export(bad)


def test_the_audit_reports_the_sparse_budget_and_attacks_the_zeroed_map(sparse_export,
                                                                       tmp_path):
    from deepobfuscator.audit import AuditSettings, audit

    run, _ = sparse_export
    fast = AuditSettings(max_epochs=1, whitebox_images=2, whitebox_steps=3, grid_images=2,
                         progress=False, recogniser="off", wire="int8", select_positions=4,
                         prior_images=0)
    doc = json.loads((audit(run, None, tmp_path / "audit", fast) / "audit.json").read_text())
    r = doc["runs"]["obfuscated"]
    assert (r["budget"]["upload_numbers"], r["budget"]["upload_bytes"]) == (K, 32 + K)
    assert doc["feature_shape"] == [1, 8, 8]  # attackers get the map, zeros where unsent
    # 8 numbers vary, more than the 4 asked for: every learned attacker tried both views
    _, models = load_run(run)
    assert set(r["views"]["positions"]) < set(kept_positions(models.encoder).tolist())
    # the inverse network and every attribute's probe of each family (the CNN's key is
    # the attribute's alone)
    learned = ["inversion", *(f"probe_{a}{fam}" for a in ("Smiling", "Male", "Young")
                              for fam in ("", ":linear", ":mlp"))]
    assert set(r["views"]) == {"positions", *learned}
    report = (tmp_path / "audit" / "report.md").read_text()
    won = [key for key in r["views"] if key != "positions" and r["views"][key] == "top4"]
    assert f"the top-4 view won for {', '.join(won) or 'none'}" in report
    for key in learned:
        other = "all" if r["views"][key] == "top4" else "top4"
        assert r["curves"][key]["view"] == r["views"][key]
        assert r["curves"][f"{key}@{other}"]["view"] == other


def test_the_attacker_view_unpacks_what_the_device_sent(sparse_export):
    from PIL import Image

    from deepobfuscator.deploy.attacker_view import AttackerView
    from deepobfuscator.models.attack_nets import InversionNetwork

    run, _ = sparse_export
    _, models = load_run(run)
    kept = kept_positions(models.encoder)
    torch.manual_seed(0)
    net = InversionNetwork((1, 8, 8), (32, 32)).eval()
    view = AttackerView.__new__(AttackerView)  # the networks without an audit folder
    view.networks = {"obfuscated": (net, (1, 8, 8), kept)}
    view.selected = {}
    view._torch = torch
    assert view.feature_shape("obfuscated") == (1, 1, K)
    sent = np.random.default_rng(0).standard_normal((1, 1, 1, K)).astype(np.float32)
    png = view.reconstruct_png("obfuscated", sent)
    import io

    got = np.asarray(Image.open(io.BytesIO(png)))
    with torch.no_grad():
        want = net(torch.from_numpy(unpack_numpy(sent, kept, (1, 8, 8))))[0]
    want = (want.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(got, want)
    # a network the audit trained on its selected view reads only those numbers
    view.selected = {"obfuscated": kept[:3]}
    got = np.asarray(Image.open(io.BytesIO(view.reconstruct_png("obfuscated", sent))))
    z = unpack_numpy(sent, kept, (1, 8, 8))
    z.reshape(-1)[np.setdiff1d(np.arange(64), kept[:3])] = 0
    with torch.no_grad():
        want = net(torch.from_numpy(z))[0]
    np.testing.assert_array_equal(got, (want.permute(1, 2, 0).numpy() * 255 + 0.5)
                                  .astype(np.uint8))


def _planted_context(k: int, noise: float = 4.0, tmp=None, carrier: float = 5.0):
    """An audit context whose numbers are noise except at PLANTED, which vary `carrier`
    times more; Male is the sign of the first of them."""
    from types import SimpleNamespace

    from deepobfuscator.attackers.base import FeatureSet
    from deepobfuscator.audit import AuditSettings
    from deepobfuscator.audit.attacks import AttackContext

    g = torch.Generator().manual_seed(0)

    def split(n):
        z = torch.randn(n, 1, 16, 16, generator=g)
        male = (z.view(n, -1)[:, PLANTED[0]] > 0).long().numpy()
        z.view(n, -1)[:, PLANTED] *= carrier
        return FeatureSet(z, torch.zeros(n, 3, 8, 8), {"Male": male})

    # the CNN alone: these tests are about the views, not the probe families
    s = AuditSettings(select_positions=k, max_epochs=8, progress=False, probe_families="cnn")
    cpu = torch.device("cpu")
    return AttackContext("obfuscated", SimpleNamespace(privacy=SimpleNamespace(
        feature_noise=noise), data=SimpleNamespace(held_out=[])), None, split(300),
        split(300), ["Male"], s, s.fit_settings(cpu, "fp32"), cpu, tmp or Path("unused"))


PLANTED = [7, 20, 41]


def test_the_audits_selected_view_keeps_the_highest_variance_numbers():
    """With select_positions = K the learned attackers also get the K numbers that vary
    most on the attacker's own split (the same K in both splits), on noisy uploads only."""
    from deepobfuscator.audit.attacks import learned_views

    ctx = _planted_context(3)
    full, top = learned_views(ctx)
    assert (full.name, full.train, full.test) == ("all", ctx.attacker, ctx.test.features)
    assert top.name == "top3" and top.positions == PLANTED
    for z, ref in ((top.train.features, ctx.attacker.features), (top.test, ctx.test.features)):
        flat, ref = z.flatten(1), ref.flatten(1)
        assert torch.equal(flat[:, PLANTED], ref[:, PLANTED])
        assert torch.all(flat[:, np.setdiff1d(np.arange(256), PLANTED)] == 0)
    assert learned_views(ctx)[1] is top  # computed once per run
    # off; every number anyway; a noise-free upload (no number is only noise)
    for ctx in (_planted_context(0), _planted_context(256), _planted_context(3, noise=0)):
        assert [v.name for v in learned_views(ctx)] == ["all"]
    # a sparse upload: only the sent numbers vary, and there are no more than K of them
    ctx = _planted_context(3)
    ctx.attacker.features.flatten(1)[:, np.setdiff1d(np.arange(256), PLANTED)] = 0
    assert [v.name for v in learned_views(ctx)] == ["all"]


def test_the_audit_reports_the_view_whose_attacker_leaks_more():
    """Both views' attackers are trained; the one with the higher figure on the test split
    is reported (the strongest attacker), whatever their held-out losses say."""
    from deepobfuscator.attackers.base import FitResult
    from deepobfuscator.audit.attacks import pick_view

    for best in ("top3", "all"):
        ctx = _planted_context(3)

        def fit_one(view, best=best):  # the held-out loss favours the other view
            loss = [0.9, 0.8] if view.name == best else [0.9, 0.1]
            return f"attacker on {view.name}", FitResult(val_loss=loss, best_epoch=1)

        def leak(view, attacker, best=best):
            return (0.7 if view.name == best else 0.6), f"figures of {attacker}"

        view, attacker, out = pick_view(ctx, "probe_Male", fit_one, leak)
        other = "all" if best == "top3" else "top3"
        assert (view.name, attacker, out) == (best, f"attacker on {best}",
                                              f"figures of attacker on {best}")
        assert ctx.curves["probe_Male"]["view"] == best
        assert ctx.curves["probe_Male"]["figure"] == 0.7
        assert ctx.curves[f"probe_Male@{other}"]["figure"] == 0.6
        assert ctx.products["view_choices"] == {"positions": PLANTED, "probe_Male": best}
    ctx = _planted_context(3)  # a tie goes to every number
    assert pick_view(ctx, "k", lambda v: (v.name, FitResult()), lambda v, a: (0.5, a))[0] \
        .name == "all"
    ctx = _planted_context(0)  # one view: nothing to record
    pick_view(ctx, "probe_Male", lambda v: ("a", FitResult(val_loss=[0.5], best_epoch=0)),
              lambda v, a: (0.5, None))
    assert "view_choices" not in ctx.products and ctx.curves["probe_Male"]["view"] == "all"


def test_a_probe_that_drops_the_noise_numbers_reads_the_planted_attribute_better(tmp_path):
    """One number of 256 carries Male: a probe of every number, standardised, learns to
    ignore 255 noise numbers imperfectly; with the top-4 view it reads Male far better,
    and the audit reports that stronger attacker."""
    from deepobfuscator.audit.attacks.attributes import AttributeProbes

    got = {}
    for k in (0, 4):
        ctx = _planted_context(k, tmp=tmp_path / str(k), carrier=3.0)
        got[k] = AttributeProbes().run(ctx)["attributes"]["Male"]["balanced_accuracy"]
        assert ctx.products.get("view_choices", {}).get("probe_Male") == \
            (None if k == 0 else "top4")
    assert got[4] > 0.9 and got[4] > got[0] + 0.05, got
