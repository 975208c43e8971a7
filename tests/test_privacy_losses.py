"""Tests for deepobfuscator.privacy: MS-SSIM (vs torchmetrics / pytorch_msssim), NaN safety,
and the attribute-privacy losses."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepobfuscator.privacy import (
    STANDARD_BETAS,
    MSSSIMSettings,
    bce_logits,
    distance_correlation,
    entropy_privacy,
    fixed_noise_image,
    ms_ssim,
    neg_ce_privacy,
    reconstruction_loss,
    settings_for_size,
    ssim,
)

pytorch_msssim = pytest.importorskip("pytorch_msssim")
tm_image = pytest.importorskip("torchmetrics.functional.image")


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    # These tensors are tiny: intra-op threads only add sync waits (seconds on a busy box).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def realistic_pair(b: int, c: int, h: int, w: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """A smooth textured image x and a blurred, noisy copy y, both in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    base = F.interpolate(torch.rand(b, c, h // 8, w // 8, generator=g), size=(h, w), mode="bicubic")
    detail = F.interpolate(
        torch.rand(b, c, h // 2, w // 2, generator=g), size=(h, w), mode="bilinear"
    )
    x = (base + 0.1 * detail).clamp(0, 1)
    k = torch.tensor([1.0, 4, 6, 4, 1])
    k = (k[:, None] * k[None]) / 256
    y = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), k.expand(c, 1, 5, 5), groups=c)
    y = (y + 0.05 * torch.randn(y.shape, generator=g)).clamp(0, 1)
    return x, y


def tm_msssim_valid(x, y, sigma, window, betas):
    """torchmetrics MS-SSIM with its last-scale SSIM made valid-padded.

    torchmetrics >= 1.5 (PR #2721) averages the *SSIM* map over the reflect-padded full image
    but the cs maps over the valid region only. The reference MS-SSIM (and ours, and
    pytorch_msssim) uses the valid region everywhere, so swap the last-scale factor:
    tm / ssim_full**beta_M * ssim_valid**beta_M, all from torchmetrics.
    """
    kw = dict(sigma=sigma, kernel_size=window, data_range=1.0, reduction="none")
    full = tm_image.multiscale_structural_similarity_index_measure(x, y, betas=betas, **kw)
    for _ in range(len(betas) - 1):
        x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    s_full = tm_image.structural_similarity_index_measure(x, y, **kw)
    _, smap = tm_image.structural_similarity_index_measure(x, y, return_full_image=True, **kw)
    p = window // 2
    s_valid = smap[..., p:-p, p:-p].flatten(1).mean(1)
    return full / s_full.relu() ** betas[-1] * s_valid.relu() ** betas[-1]


# ----------------------------------------------------------------------------- ms_ssim basics


def test_identical_images_give_one():
    x, _ = realistic_pair(2, 3, 64, 64)
    assert abs(ms_ssim(x, x).item() - 1.0) < 1e-5
    assert abs(ssim(x, x).item() - 1.0) < 1e-5


def test_independent_noise_gives_near_zero():
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(2, 3, 64, 64, generator=g), torch.rand(2, 3, 64, 64, generator=g)
    assert ms_ssim(a, b).item() < 0.1


def test_reduction_none_is_per_image():
    x, y = realistic_pair(3, 3, 64, 64)
    per = ms_ssim(x, y, reduction="none")
    assert per.shape == (3,)
    assert torch.allclose(per.mean(), ms_ssim(x, y))
    assert torch.allclose(per[1], ms_ssim(x[1:2], y[1:2]))


def test_default_betas_are_renormalised():
    b = MSSSIMSettings(scales=3).effective_betas
    assert math.isclose(sum(b), 1.0)
    assert b[0] / b[1] == pytest.approx(0.0448 / 0.2856)
    assert MSSSIMSettings(scales=5).effective_betas == pytest.approx(STANDARD_BETAS, rel=1e-3)


def test_settings_roundtrip_and_validation():
    s = MSSSIMSettings(scales=2, sigma=0.8, window=7, betas=[0.4, 0.6])
    assert MSSSIMSettings(**s.to_dict()) == s
    with pytest.raises(ValueError, match="odd"):
        MSSSIMSettings(window=10)
    with pytest.raises(ValueError, match="betas"):
        MSSSIMSettings(scales=3, betas=(0.5, 0.5))


# ---------------------------------------------------------------- agreement with the libraries


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(
    ("size", "scales", "sigma", "window"),
    [(64, 3, 1.5, 11), (64, 5, 0.4, 3), (128, 4, 1.5, 11), (192, 5, 1.5, 11)],
)
def test_matches_torchmetrics(size, scales, sigma, window, channels):
    x, y = realistic_pair(4, channels, size, size, seed=size + scales)
    betas = STANDARD_BETAS[:scales]
    ours = ms_ssim(x, y, MSSSIMSettings(scales, sigma, window, betas), reduction="none")
    ref = tm_msssim_valid(x, y, sigma, window, betas)
    # Channels: torchmetrics pools cs over C before the powers, we per channel (as TF and
    # pytorch_msssim); on RGB that differs by ~1e-5, on one channel it is rounding only.
    tol = 2e-6 if channels == 1 else 1e-4
    assert (ours - ref).abs().max().item() < tol


@pytest.mark.parametrize(
    ("size", "scales", "sigma", "window"),
    [(64, 3, 0.4, 3), (64, 5, 0.4, 3), (192, 3, 1.5, 11), (192, 5, 1.5, 11)],
)
def test_matches_pytorch_msssim(size, scales, sigma, window):
    # pytorch_msssim insists on min side > (window - 1) * 16 whatever the scale count, hence
    # window 3 at 64 px. It does not renormalise the weights, so pass them to both.
    x, y = realistic_pair(4, 3, size, size, seed=size * scales)
    betas = STANDARD_BETAS[:scales]
    ours = ms_ssim(x, y, MSSSIMSettings(scales, sigma, window, betas), reduction="none")
    ref = pytorch_msssim.ms_ssim(
        x,
        y,
        data_range=1.0,
        size_average=False,
        win_size=window,
        win_sigma=sigma,
        weights=list(betas),
    )
    assert (ours - ref).abs().max().item() < 1e-5


@pytest.mark.parametrize(("sigma", "window"), [(1.5, 11), (0.8, 7)])
def test_ssim_matches_libraries(sigma, window):
    x, y = realistic_pair(3, 3, 64, 64, seed=7)
    ours = ssim(x, y, sigma=sigma, window=window, reduction="none")
    ref_pm = pytorch_msssim.ssim(
        x, y, data_range=1.0, size_average=False, win_size=window, win_sigma=sigma
    )
    _, smap = tm_image.structural_similarity_index_measure(
        x,
        y,
        sigma=sigma,
        kernel_size=window,
        data_range=1.0,
        reduction="none",
        return_full_image=True,
    )
    p = window // 2  # torchmetrics' own mean includes a reflect-padded border; crop it
    ref_tm = smap[..., p:-p, p:-p].flatten(1).mean(1)
    assert (ours - ref_pm).abs().max().item() < 1e-5
    assert (ours - ref_tm).abs().max().item() < 1e-5


# ------------------------------------------------------------------------------- NaN safety


def _assert_finite_value_and_grad(x: torch.Tensor, y: torch.Tensor, s: MSSSIMSettings) -> None:
    x = x.clone().requires_grad_(True)
    val = ms_ssim(x, y, s)
    val.backward()
    assert torch.isfinite(val).item()
    assert 0.0 <= val.item() <= 1.0 + 1e-6
    assert torch.isfinite(x.grad).all()


def test_negatively_correlated_pair_is_finite():
    x, _ = realistic_pair(2, 3, 64, 64)
    # 1 - x drives every raw cs negative: the authors' NaN case.
    s = MSSSIMSettings()
    assert ms_ssim(x, 1 - x, s).item() < 0.05
    _assert_finite_value_and_grad(x, 1 - x, s)


_KINDS = ["noise", "zeros", "ones", "constant", "inverse", "tiny", "binary", "same"]


def _make(kind: str, ref: torch.Tensor, g: torch.Generator, value: float) -> torch.Tensor:
    if kind == "noise":
        return torch.rand(ref.shape, generator=g)
    if kind == "zeros":
        return torch.zeros_like(ref)
    if kind == "ones":
        return torch.ones_like(ref)
    if kind == "constant":
        return torch.full_like(ref, value)
    if kind == "inverse":
        return 1 - ref
    if kind == "tiny":  # values at float32's bottom end, incl. subnormals
        return torch.rand(ref.shape, generator=g) * 1e-38
    if kind == "binary":
        return (torch.rand(ref.shape, generator=g) > 0.5).float()
    return ref.clone()


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind_x=st.sampled_from(_KINDS[:-2] + ["binary"]),
    kind_y=st.sampled_from(_KINDS),
    size=st.sampled_from([(16, 16), (24, 20), (33, 47), (48, 40)]),
    value=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_ms_ssim_never_nan(kind_x, kind_y, size, value, seed):
    g = torch.Generator().manual_seed(seed)
    template = torch.empty(2, 3, *size)
    x = _make(kind_x if kind_x not in ("inverse", "same") else "noise", template, g, value)
    y = _make(kind_y, x, g, 1 - value)
    _assert_finite_value_and_grad(x, y, settings_for_size(*size))
    _assert_finite_value_and_grad(y, x, settings_for_size(*size))


# ------------------------------------------------------------------- sizes, dtypes, errors


@pytest.mark.parametrize("hw", [(32, 32), (48, 48), (64, 64), (109, 89), (128, 128), (218, 178)])
def test_settings_for_size_is_accepted(hw):
    s = settings_for_size(*hw)
    assert min(hw) >= s.min_side
    x, y = realistic_pair(1, 3, *hw)
    v = ms_ssim(x, y, s)
    assert torch.isfinite(v) and 0.5 < v.item() <= 1.0


def test_settings_for_size_rule():
    assert settings_for_size(218, 178) == MSSSIMSettings(scales=5)
    assert settings_for_size(128, 128) == MSSSIMSettings(scales=4)
    assert settings_for_size(64, 64) == MSSSIMSettings(scales=3)
    assert settings_for_size(32, 32).window == 7


def test_too_small_raises_clearly():
    with pytest.raises(ValueError, match="too small"):
        settings_for_size(12, 12)
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(ValueError, match=r"too small.*settings_for_size\(32, 32\)"):
        ms_ssim(x, x, MSSSIMSettings(scales=3, window=11))


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="same shape"):
        ms_ssim(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 63))
    with pytest.raises(ValueError, match="same shape"):
        ms_ssim(torch.rand(3, 64, 64), torch.rand(3, 64, 64))


def test_bf16_inputs_compute_in_float32():
    x, y = realistic_pair(2, 3, 64, 64)
    xb, yb = x.bfloat16(), y.bfloat16()
    out = ms_ssim(xb, yb)
    assert out.dtype == torch.float32
    assert out.item() == pytest.approx(ms_ssim(xb.float(), yb.float()).item(), abs=1e-6)
    assert out.item() == pytest.approx(ms_ssim(x, y).item(), abs=5e-3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = ms_ssim(x, y)
        auto_ssim = ssim(x, y)
    assert auto.dtype == torch.float32 and auto_ssim.dtype == torch.float32
    assert auto.item() == pytest.approx(ms_ssim(x, y).item(), abs=1e-6)


# --------------------------------------------------------------------- reconstruction losses


def test_reconstruction_loss_r1_r2():
    x, y = realistic_pair(3, 3, 64, 64)
    s = settings_for_size(64, 64)
    assert reconstruction_loss(x, x, s).item() == pytest.approx(0.0, abs=1e-5)
    assert reconstruction_loss(y, x, s).item() == pytest.approx(1 - ms_ssim(y, x, s).item())
    noise = fixed_noise_image((3, 64, 64), seed=0)
    r2 = reconstruction_loss(y, noise, s)  # (C, H, W) broadcast over the batch
    expected = 1 - ms_ssim(y, noise.expand(3, -1, -1, -1), s)
    assert r2.item() == pytest.approx(expected.item())
    assert reconstruction_loss(y, noise).item() == pytest.approx(r2.item())  # settings=None


def test_fixed_noise_image_is_deterministic():
    a = fixed_noise_image((3, 16, 16), seed=5)
    assert torch.equal(a, fixed_noise_image((3, 16, 16), seed=5))
    assert not torch.equal(a, fixed_noise_image((3, 16, 16), seed=6))
    assert a.dtype == torch.float32 and a.min() >= 0 and a.max() <= 1


# -------------------------------------------------------------------- attribute privacy losses


def test_bce_and_neg_ce():
    logits = torch.tensor([0.0, 2.0, -3.0, 10.0])
    labels = torch.tensor([1.0, 0.0, 0.0, 1.0])
    expected = F.binary_cross_entropy(torch.sigmoid(logits.double()), labels.double()).item()
    assert bce_logits(logits, labels).item() == pytest.approx(expected, rel=1e-5)
    assert neg_ce_privacy(logits, labels).item() == pytest.approx(-expected, rel=1e-5)
    assert bce_logits(torch.zeros(4), labels).item() == pytest.approx(math.log(2))
    assert bce_logits(logits.bfloat16(), labels).dtype == torch.float32
    with pytest.raises(ValueError, match="same shape"):
        bce_logits(torch.zeros(4, 1), labels)


def test_entropy_privacy_values():
    assert entropy_privacy(torch.zeros(8, 3)).item() == pytest.approx(0.0, abs=1e-7)
    big = torch.tensor([-200.0, 200.0, 60.0, -60.0])
    assert entropy_privacy(big).item() == pytest.approx(math.log(2), abs=1e-6)
    p = torch.sigmoid(torch.tensor(1.3, dtype=torch.float64))
    h = -(p * p.log() + (1 - p) * (1 - p).log())
    assert entropy_privacy(torch.tensor([1.3])).item() == pytest.approx(math.log(2) - h.item())


def test_entropy_privacy_gradient_moves_logits_to_zero():
    z = torch.tensor([-3.0, -0.5, 0.7, 4.0, 80.0], requires_grad=True)
    entropy_privacy(z).backward()
    assert torch.isfinite(z.grad).all()
    assert (torch.sign(z.grad[:4]) == torch.sign(z.detach()[:4])).all()  # descent -> toward 0
    z2 = z.detach()[:4].clone().requires_grad_(True)
    for _ in range(20):
        (grad,) = torch.autograd.grad(entropy_privacy(z2), z2)
        z2 = (z2 - 5.0 * grad).detach().requires_grad_(True)
    assert (z2.detach().abs() < z.detach()[:4].abs()).all()


# ----------------------------------------------------------------------- distance correlation


def _dcor_reference(a: torch.Tensor, b: torch.Tensor) -> float:
    def centred(v):
        d = torch.cdist(v, v)
        return d - d.mean(0, keepdim=True) - d.mean(1, keepdim=True) + d.mean()

    big_a, big_b = centred(a.flatten(1).double()), centred(b.flatten(1).double())
    ratio = (big_a * big_b).mean() / ((big_a * big_a).mean() * (big_b * big_b).mean()).sqrt()
    return ratio.sqrt().item()


def test_distance_correlation_independent_small():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(256, 2, generator=g), torch.randn(256, 2, generator=g)
    v = distance_correlation(a, b).item()
    assert v < 0.2
    assert v == pytest.approx(_dcor_reference(a, b), abs=1e-5)


def test_distance_correlation_dependence():
    g = torch.Generator().manual_seed(1)
    a = torch.rand(128, 3, 8, 8, generator=g)
    assert distance_correlation(a, 3.0 * a - 2.0).item() == pytest.approx(1.0, abs=1e-4)
    assert distance_correlation(a, a.flatten(1)).item() == pytest.approx(1.0, abs=1e-4)
    s = torch.randn(256, 1, generator=g)  # symmetric: Pearson corr(s, s^2) ~ 0, dCor is not
    indep = distance_correlation(s, torch.randn(256, 1, generator=g)).item()
    dep = distance_correlation(s, s**2).item()
    assert dep > 0.35 and dep > indep + 0.2
    assert dep == pytest.approx(_dcor_reference(s, s**2), abs=1e-5)


def test_distance_correlation_scale_invariant_and_differentiable():
    g = torch.Generator().manual_seed(2)
    a = torch.randn(64, 16, generator=g)
    b = torch.tanh(a[:, :4]) + 0.5 * torch.randn(64, 4, generator=g)
    v = distance_correlation(a, b)
    assert v.item() == pytest.approx(distance_correlation(100 * a, 0.01 * b).item(), abs=1e-5)
    assert v.item() == pytest.approx(_dcor_reference(a, b), abs=1e-5)
    a_dup = torch.cat([a[:8], a[:8]]).requires_grad_(True)  # coincident rows
    distance_correlation(a_dup, b[:16]).backward()
    assert torch.isfinite(a_dup.grad).all()
    two = torch.randn(2, 5, generator=g, requires_grad=True)
    out = distance_correlation(two, torch.randn(2, 3, generator=g))
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(two.grad).all()
    const = distance_correlation(torch.ones(8, 4), torch.randn(8, 4, generator=g))
    assert torch.isfinite(const) and const.item() < 1e-3
    with pytest.raises(ValueError, match="batch"):
        distance_correlation(torch.randn(1, 3), torch.randn(1, 3))
