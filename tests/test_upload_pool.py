"""model.upload_pool: the phone averages the upload down, the cloud scales it back up."""

import json

import pytest
import torch
from torch.nn import functional as F

from deepobfuscator.config import ConfigError, load_config
from deepobfuscator.defences.cap import unit_rms
from deepobfuscator.models import build_models, feature_shape
from deepobfuscator.models.budget import phone_budget

# no cap and no gain (the default's gain is sized to the upload: its weights differ pooled)
PLAIN = ["privacy.normalize_features=false", "privacy.feature_noise=0", "model.position_gain=0",
         "model.upload_positions=0"]


def test_pooling_by_two_uploads_a_quarter_of_the_numbers_for_the_same_compute():
    plain = load_config("cpu", ["model.upload_positions=0"])  # every number sent
    pooled = load_config("cpu", ["model.upload_pool=2", "model.upload_positions=0"])
    c, h, w = feature_shape(plain)
    assert feature_shape(pooled) == (c, h // 2, w // 2)
    a, b = phone_budget(plain), phone_budget(pooled)
    assert b.upload_numbers * 4 == a.upload_numbers and b.upload_bytes < a.upload_bytes
    assert (b.phone_macs, b.cloud_macs) == (a.phone_macs, a.cloud_macs)
    assert b.info_cap_bits == pytest.approx(a.info_cap_bits / 4)  # the cap is per number
    assert (a.upload_pool, b.upload_pool) == (1, 2)


def test_the_audit_report_names_the_pool_only_where_a_run_has_one():
    from deepobfuscator.audit.report import budget_rows

    def rows(*overrides):
        b = phone_budget(load_config("cpu", list(overrides))).to_dict()
        return {r["figure"]: r for r in budget_rows({"runs": {"obfuscated": {"budget": b}}})}

    assert rows("model.upload_pool=2")["Upload average-pooled by"]["obfuscated"] == "2"
    assert "Upload average-pooled by" not in rows()


@pytest.mark.parametrize("method", ["none", "deepobfuscator", "robust"])
def test_every_network_takes_the_pooled_upload(method):
    cfg = load_config("cpu", ["model.upload_pool=2", f"privacy.method={method}"])
    torch.manual_seed(0)
    m = build_models(cfg)
    for net in m.named().values():
        net.eval()
    x = torch.rand(2, 3, *cfg.data.image_size)
    with torch.no_grad():
        z = m.encoder(x)
        assert tuple(z.shape) == (2, *feature_shape(cfg))
        assert m.classifier(z).shape == (2,)
        for adv in m.adversaries.values():
            assert adv(z).shape == (2,)
        assert m.reconstructor(z).shape == x.shape


def test_the_upload_is_the_average_of_the_unpooled_map_before_the_cap():
    """Same weights (the pool has none): pooled features are 2x2 means of the unpooled
    ones, and the cap's unit RMS is taken on what is uploaded."""
    torch.manual_seed(0)
    plain = build_models(load_config("cpu", PLAIN)).encoder.eval()
    for overrides, finish in ((PLAIN, lambda z: z),
                              (["privacy.normalize_features=true", "privacy.feature_noise=0",
                                "model.position_gain=0", "model.upload_positions=0"],
                               unit_rms)):
        pooled = build_models(load_config("cpu", [*overrides, "model.upload_pool=2"])).encoder
        pooled.load_state_dict(plain.state_dict())  # identical keys
        pooled.eval()
        x = torch.rand(3, 3, 64, 64)
        with torch.no_grad():
            if overrides is PLAIN:
                expected = F.avg_pool2d(plain(x), 2)
            else:  # the linear bottleneck of the capped model, then pool, then unit RMS
                capped = build_models(load_config("cpu", overrides)).encoder
                capped.load_state_dict(plain.state_dict())
                capped.eval()
                expected = F.avg_pool2d(capped.stage("bottleneck")(capped.blocks(x)), 2)
            torch.testing.assert_close(pooled(x), finish(expected))


def test_the_cloud_sees_each_uploaded_number_over_its_2x2_cell():
    cfg = load_config("cpu", ["model.upload_pool=2"])
    cls = build_models(cfg).classifier
    z = torch.arange(64.0).reshape(1, 1, 8, 8)
    up = cls.expand(z)
    assert up.shape == (1, 1, 16, 16)
    torch.testing.assert_close(up[..., ::2, ::2], z)
    torch.testing.assert_close(up[..., 1::2, 1::2], z)


def test_the_fingerprint_of_an_unpooled_config_does_not_name_the_key():
    """Runs trained before upload_pool (and the later model keys) existed keep their
    fingerprint (resume, export manifests, audit caches), and pooling changes it."""
    import hashlib

    # no late key away from its first value (the preset re-fits its cloud since 2026-12-05)
    cfg = load_config("robust", ["train.refit_cloud=false"])
    d = cfg.to_dict()
    assert d["model"]["upload_pool"] == 1  # written into config.yaml all the same
    del d["schema"]  # the format's version names no run
    paper = d["privacy"].pop("paper")  # version 3 moved the paper's keys: hashed where
    d["model"].update(decoder_width=paper.pop("decoder_width"),  # version 2 had them
                      adversary_from_classifier=paper.pop("adversary_from_classifier"))
    d["privacy"].update(paper)
    for late in ("upload_pool", "bottleneck_context", "position_gain", "upload_positions"):
        del d["model"][late]
    del d["privacy"]["noise_warmup"]
    del d["privacy"]["erase"]
    del d["privacy"]["extra_defences"]
    del d["data"]["held_out"]
    del d["data"]["align"]
    del d["data"]["augment"]
    for late in ("info_weight", "info_temperature"):
        del d["privacy"]["robust"][late]
    for late in ("upload_tune_epochs", "upload_tune_lr", "refit_cloud",  # 1: nothing re-fits
                 "balance_tasks"):
        del d["train"][late]
    for stage in ("task", "reconstructor", "adversaries", "adversarial"):
        del d["train"][stage]["lr_schedule"]
    old = hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]
    assert cfg.fingerprint() == old
    assert load_config("robust", ["train.refit_cloud=false", "model.upload_pool=2"]
                       ).fingerprint() != old


@pytest.mark.parametrize("pool", [0, 3, 32])
def test_a_pool_that_does_not_divide_the_map_is_refused_with_the_fix(pool):
    with pytest.raises(ConfigError, match=r"upload_pool=.*divide the split's feature map"):
        load_config("cpu", [f"model.upload_pool={pool}"])


def test_the_baseline_is_never_pooled():
    from deepobfuscator.config import no_privacy_overrides

    cfg = load_config("cpu", ["model.upload_pool=2", *no_privacy_overrides()])
    assert cfg.model.upload_pool == 1


def test_a_pooled_run_exports_with_parity(tiny_config, tmp_path):
    """The pool is inside obfuscator.onnx and the upsampling inside classifier.onnx: the
    export's parity check passes and the manifest's feature shape is the pooled one."""
    from deploy_helpers import assert_onnx_matches_run

    from deepobfuscator.deploy.export import export_run
    from deepobfuscator.training import train

    cfg = tiny_config("model.upload_pool=2", "privacy.method=none", "model.bottleneck=2",
                      "model.upload_positions=0")
    run = train(cfg, tmp_path / "run", progress=False)
    out = export_run(run, tmp_path / "export", mobile=False)
    m = json.loads((out / "manifest.json").read_text())
    assert m["features"]["shape"] == [2, 4, 4]  # 32 px, split 2: 8 x 8, pooled by 2
    assert_onnx_matches_run(run, out)
