"""Two phone-side layers for the information cap: model.bottleneck_context (a whole-image
signal added at every position of the upload) and model.position_gain (a learned gain on
every uploaded number)."""

import json

import pytest
import torch

from deepobfuscator.config import ConfigError, load_config, no_privacy_overrides
from deepobfuscator.geometry import block_widths
from deepobfuscator.models import build_models, feature_shape
from deepobfuscator.models.budget import phone_budget

CONTEXT = "model.bottleneck_context=true"
GAIN = "model.position_gain=10"
CAP = ["privacy.normalize_features=true", "privacy.feature_noise=0"]


def _cfg(*overrides: str):
    """The default phone without its gain (the default has one), then the overrides."""
    return load_config("cpu", ["model.position_gain=0", *overrides])


def _reach(cfg, seed: int = 0) -> float:
    """How much the upload's top-left position moves when the bottom-right quarter of the
    image changes (eval mode, no noise). The context map gets unit-scale weights: its
    training init is small, and the wiring is what is tested."""
    torch.manual_seed(seed)
    enc = build_models(cfg).encoder.eval()
    context = enc.stage("bottleneck").context
    if context is not None:
        torch.nn.init.normal_(context.weight, std=context.in_features ** -0.5)
    x = torch.rand(2, 3, *cfg.data.image_size)
    y = x.clone()
    h, w = cfg.data.image_size
    y[..., h // 2:, w // 2:] = torch.rand_like(y[..., h // 2:, w // 2:])
    with torch.no_grad():
        return float((enc(x)[..., 0, 0] - enc(y)[..., 0, 0]).abs().max())


def test_with_context_a_far_corner_of_the_image_reaches_every_position():
    """At the paper's split a position sees a patch; the context term sees the whole image.
    (Without the cap: its unit RMS moves every position a little with any change.)"""
    plain = ["privacy.normalize_features=false", "privacy.feature_noise=0"]
    assert _reach(_cfg(*plain)) == 0.0
    assert _reach(_cfg(*plain, CONTEXT)) > 1e-3


def test_context_costs_one_small_linear_on_the_phone_and_nothing_on_the_wire():
    plain = _cfg()
    ctx = _cfg(CONTEXT)
    a, b = phone_budget(plain), phone_budget(ctx)
    c_split = block_widths(plain.model.width)[plain.model.split_block - 1][-1]
    assert b.phone_macs - a.phone_macs == c_split * plain.model.bottleneck
    assert (b.cloud_macs, b.upload_numbers, b.upload_bytes, b.info_cap_bits) == (
        a.cloud_macs, a.upload_numbers, a.upload_bytes, a.info_cap_bits)
    assert feature_shape(ctx) == feature_shape(plain)


def test_context_without_a_bottleneck_is_refused_with_the_fix():
    with pytest.raises(ConfigError, match="bottleneck_context.*model.bottleneck >= 1"):
        _cfg(CONTEXT, "model.bottleneck=0")


@pytest.mark.parametrize("key", [CONTEXT, GAIN])
def test_each_changes_the_fingerprint_and_the_baseline_never_has_it(key):
    assert _cfg(key).fingerprint() != _cfg().fingerprint()
    base = _cfg(key, *no_privacy_overrides()).model
    assert not (base.bottleneck_context or base.position_gain)


def test_the_gain_starts_at_one_and_leaves_the_encoder_as_it_was():
    torch.manual_seed(0)
    plain = build_models(_cfg(*CAP)).encoder.eval()
    gained = build_models(_cfg(*CAP, GAIN)).encoder.eval()
    assert gained.gain.shape == (1, *feature_shape(_cfg()))
    delta = gained.stage("gain").delta.detach()
    gained.load_state_dict({**plain.state_dict(), "stages.gain.delta": delta})
    assert torch.all(gained.gain == 1)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(gained(x), plain(x))


def test_under_the_cap_a_zero_gain_moves_that_power_to_the_other_positions():
    """The cap fixes the upload's power: positions whose gain is 0 send exactly 0 (only
    noise reaches the cloud there) and the rest carry all of it, at a higher RMS."""
    torch.manual_seed(0)
    enc = build_models(_cfg(*CAP, GAIN)).encoder.eval()
    x = torch.rand(4, 3, 64, 64)
    with torch.no_grad():
        before = enc(x)
        gain = enc.stage("gain")
        gain.delta[..., 8:, :] = -1 / gain.rate  # the bottom half of the map
        after = enc(x)
    assert torch.all(after[..., 8:, :] == 0)
    rms = after.pow(2).mean(dim=(1, 2, 3)).sqrt()
    torch.testing.assert_close(rms, torch.ones(4))
    top = after[..., :8, :].pow(2).mean(dim=(1, 2, 3)).sqrt()
    assert torch.all(top > 1.3) and torch.all(top / before[..., :8, :].pow(2).mean(
        dim=(1, 2, 3)).sqrt() > 1.3)


@pytest.mark.parametrize("rate", [1.0, 10.0])
def test_the_gain_moves_at_its_rate_times_the_optimiser_step(rate):
    """Adam's first step moves each weight by lr: the gain moves by rate x lr."""
    torch.manual_seed(0)
    enc = build_models(_cfg(*CAP, f"model.position_gain={rate}")).encoder
    opt = torch.optim.Adam(enc.parameters(), lr=1e-3)
    enc(torch.rand(4, 3, 64, 64))[..., :4, :].sum().backward()
    opt.step()
    moved = (enc.gain - 1).abs()
    torch.testing.assert_close(moved.max(), torch.tensor(rate * 1e-3), rtol=1e-3, atol=0)


def test_a_negative_gain_rate_is_refused_with_the_fix():
    with pytest.raises(ConfigError, match="position_gain=-1.0 must be >= 0"):
        _cfg("model.position_gain=-1")


def test_the_gain_costs_no_phone_compute_and_nothing_on_the_wire():
    a, b = phone_budget(_cfg()), phone_budget(_cfg(GAIN))
    assert (a.phone_macs, a.cloud_macs, a.upload_bytes, a.info_cap_bits) == (
        b.phone_macs, b.cloud_macs, b.upload_bytes, b.info_cap_bits)


def test_a_run_with_context_gain_and_the_cap_exports_with_parity(tiny_config, tmp_path):
    """The context term (a mean and a matrix product) and the gain (a product) are inside
    obfuscator.onnx, and the cap's noise stays in the manifest's contract."""
    from deploy_helpers import assert_onnx_matches_run

    from deepobfuscator.deploy.export import export_run
    from deepobfuscator.runs import load_run
    from deepobfuscator.training import train

    cfg = tiny_config(CONTEXT, GAIN, "privacy.method=none", "model.bottleneck=2",
                      "privacy.normalize_features=true", "privacy.feature_noise=1",
                      "model.upload_positions=0")
    run = train(cfg, tmp_path / "run", progress=False)
    out = export_run(run, tmp_path / "export", mobile=False)
    m = json.loads((out / "manifest.json").read_text())
    assert m["features"]["noise_std"] == 1.0
    gain = load_run(run)[1].encoder.gain
    assert not torch.allclose(gain, torch.ones_like(gain))  # training moved it
    assert_onnx_matches_run(run, out)


def test_an_encoder_with_a_gain_takes_its_own_size_and_the_white_box_is_told_so():
    """The gain fixes the upload's shape, so E takes its training size only: the white-box
    attacker asks for that size instead of failing deep inside E on a probe image."""
    from deepobfuscator.attackers.whitebox import WhiteBoxAttack

    cfg = _cfg(*CAP, GAIN, "data.image_size=[32,32]")
    enc = build_models(cfg).encoder.eval()
    z = enc(torch.rand(2, 3, 32, 32)).detach()
    with pytest.raises(ValueError, match=r"image_size=\(H, W\)"):
        WhiteBoxAttack(enc, steps=1, progress=False).reconstruct(z)
    out = WhiteBoxAttack(enc, steps=1, progress=False, image_size=(32, 32)).reconstruct(z)
    assert out.shape == (2, 3, 32, 32)
