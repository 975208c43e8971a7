"""`deepobfuscator choose-upload RUN --noise S`: a tighter information cap on a trained
run without retraining the phone. The phone's weights and the numbers it chooses stay;
only the noise std rises and the cloud re-fits to it. Lower noise, or noise on a run
without the cap, is refused: neither keeps the privacy the run was trained under."""

from __future__ import annotations

import json

import pytest
import torch

from deepobfuscator.cli import main
from deepobfuscator.config import ConfigError, load_config
from deepobfuscator.deploy.export import export_run, load_export
from deepobfuscator.runs import load_run, read_run_config
from deepobfuscator.training import train
from deepobfuscator.training.checkpoint import load_checkpoint
from deepobfuscator.training.reuse import with_upload

CAPPED = ["model.bottleneck=1", "privacy.normalize_features=true", "privacy.feature_noise=2",
          "model.position_gain=10", "privacy.method=task-continuation", "train.task.epochs=2",
          "train.adversarial.epochs=1", "train.checkpoint_every_s=0"]


@pytest.fixture(scope="module")
def capped_runs(tmp_path_factory):
    """A capped run sending 4 numbers and one sending every number (no mask to choose)."""
    from conftest import TINY, _session_cache_env

    mp = _session_cache_env(tmp_path_factory)
    try:
        root = tmp_path_factory.mktemp("capped")
        sparse = train(load_config("cpu", [*TINY, *CAPPED, "model.upload_positions=4"]),
                       root / "sparse", progress=False)
        # a full upload trained without a re-fit stage: --noise must add one
        full = train(load_config("cpu", [*TINY, *CAPPED, "model.upload_positions=0",
                                         "train.upload_tune_epochs=0"]),
                     root / "full", progress=False)
        return sparse, full
    finally:
        mp.undo()


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sb = b.state_dict()
    return all(torch.equal(v, sb[k]) for k, v in a.state_dict().items())


@pytest.mark.parametrize("which", ["sparse", "full"])
def test_more_noise_keeps_the_phone_and_refits_the_cloud(capped_runs, tmp_path, which):
    run = capped_runs[0 if which == "sparse" else 1]
    out = tmp_path / "tight"
    assert main(["choose-upload", str(run), "--noise", "3", "--out", str(out), "--quiet"]) == 0
    (_, src), (_, new) = load_run(run), load_run(out)
    assert _same(src.encoder, new.encoder)  # weights and the chosen positions alike
    assert new.encoder.noise_std == 3.0 and src.encoder.noise_std == 2.0
    last = load_checkpoint(run / "checkpoint.pt")["models"]["classifier"]
    assert not all(torch.equal(v, last[k]) for k, v in new.classifier.state_dict().items()), \
        "the cloud did not re-fit to the noisier upload"
    assert read_run_config(out).privacy.feature_noise == 3.0
    assert read_run_config(out).train.upload_tune_epochs >= 1
    bits = [json.loads((r / "run.json").read_text())["budget"]["info_cap_bits"]
            for r in (run, out)]
    assert bits[1] < bits[0]
    # the exported phone adds the new noise: the contract the manifest states
    assert load_export(export_run(out, tmp_path / "export", parity_images=4,
                                  mobile=False)).noise_std == 3.0
    # the same command again is a no-op
    assert main(["choose-upload", str(run), "--noise", "3", "--out", str(out), "--quiet"]) == 0


def test_the_noisier_upload_tells_a_probe_less(capped_runs, tmp_path):
    """The new upload is the old one plus independent noise: its correlation with the
    noise-free features (what any attacker would like to recover) drops."""
    run, _ = capped_runs
    out = tmp_path / "tight"
    assert main(["choose-upload", str(run), "--noise", "8", "--out", str(out), "--quiet"]) == 0
    (_, src), (_, new) = load_run(run), load_run(out)
    x = torch.rand(256, 3, 32, 32)
    torch.manual_seed(0)
    with torch.no_grad():
        clean_enc = load_run(run)[1].encoder.eval()
        clean_enc.noise_std = 0.0
        clean, old, tight = clean_enc(x), src.encoder.eval()(x), new.encoder.eval()(x)
    kept = clean.flatten(1).abs().sum(0) > 0

    def corr(a: torch.Tensor) -> float:
        a, c = a.flatten(1)[:, kept], clean.flatten(1)[:, kept]
        a, c = a - a.mean(0), c - c.mean(0)
        return float((a * c).sum() / (a.norm() * c.norm()))

    assert corr(tight) < corr(old) < 1.0


def test_looser_or_meaningless_noise_is_refused(capped_runs, tmp_path, capsys):
    from conftest import TINY

    run, _ = capped_runs
    uncapped = train(load_config("cpu", [*TINY, "model.bottleneck=1",
                                         "privacy.normalize_features=false",
                                         "privacy.feature_noise=1", "model.upload_positions=0",
                                         "privacy.method=none", "model.position_gain=0",
                                         "train.checkpoint_every_s=0"]),
                     tmp_path / "uncapped", progress=False)
    refused = {"a": ([str(run), "--noise", "1"], "at least the run's own"),
               "b": ([str(run), "--noise", "nan"], "at least the run's own"),
               "c": ([str(run)], "changes nothing"),
               "d": ([str(run), "--positions", "auto", "--noise", "3"], "choose the count first"),
               "e": ([str(uncapped), "--noise", "3"], "needs a run trained with the")}
    for name, (args, why) in refused.items():
        assert main(["choose-upload", *args, "--out", str(tmp_path / name)]) != 0
        assert why in capsys.readouterr().err, name
        assert not (tmp_path / name).exists()
    with pytest.raises(ConfigError, match="at least the run's own"):
        with_upload(run, tmp_path / "f", noise=1.5)


def test_refit_alone_refits_a_full_upload_cloud_and_keeps_the_phone(capped_runs, tmp_path):
    """`choose-upload RUN --refit-epochs 1` on a run that sends every number: the cloud
    re-fits to the phone as deployed; nothing the phone sends changes."""
    _, run = capped_runs
    out = tmp_path / "refit"
    assert main(["choose-upload", str(run), "--refit-epochs", "1", "--out", str(out),
                 "--quiet"]) == 0
    (_, src), (_, new) = load_run(run), load_run(out)
    assert _same(src.encoder, new.encoder) and new.encoder.noise_std == src.encoder.noise_std
    assert not _same(src.classifier, new.classifier)
    assert read_run_config(out).train.upload_tune_epochs == 1
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert history[-1]["stage"] == "upload" and "tune_task_loss" in history[-1]


def test_training_with_refit_cloud_equals_the_refit_after_training(capped_runs, tmp_path):
    """`train.refit_cloud=true` re-fits the cloud of a full-upload run at the end of
    training, bit for bit what `choose-upload --refit-epochs 1` does to the run trained
    without it, and under the same fingerprint (so that command on it is a no-op)."""
    from conftest import TINY

    _, run = capped_runs
    after = tmp_path / "after"
    assert main(["choose-upload", str(run), "--refit-epochs", "1", "--out", str(after),
                 "--quiet"]) == 0
    cfg = load_config("cpu", [*TINY, *CAPPED, "model.upload_positions=0",
                              "train.upload_tune_epochs=1", "train.refit_cloud=true"])
    assert read_run_config(after).fingerprint() == cfg.fingerprint()
    during = train(cfg, tmp_path / "during", progress=False)
    (_, a), (_, b), (_, plain) = load_run(after), load_run(during), load_run(run)
    assert _same(a.encoder, b.encoder) and _same(a.classifier, b.classifier)
    assert _same(plain.encoder, b.encoder) and not _same(plain.classifier, b.classifier)
    history = [json.loads(line) for line in (during / "metrics.jsonl").read_text().splitlines()]
    assert history[-1]["stage"] == "upload" and "tune_task_loss" in history[-1]
    assert main(["choose-upload", str(run), "--refit-epochs", "1", "--out", str(during),
                 "--quiet"]) == 0  # the same run already: nothing is retrained


def test_refit_cloud_needs_epochs_and_leaves_old_hashes_alone():
    from deepobfuscator.config import config_from_dict, no_privacy_overrides

    with pytest.raises(ConfigError, match="refit_cloud"):
        load_config("robust", ["train.upload_tune_epochs=0"])
    assert load_config("robust").train.refit_cloud
    assert not load_config("robust", no_privacy_overrides()).train.refit_cloud
    # a config saved before the key existed reads false, with its old hash
    d = load_config("cpu").to_dict()
    del d["train"]["refit_cloud"]
    old = config_from_dict(d)
    assert not old.train.refit_cloud and old.fingerprint() == load_config("cpu").fingerprint()
    assert load_config("cpu", ["train.refit_cloud=true"]).fingerprint() != old.fingerprint()
