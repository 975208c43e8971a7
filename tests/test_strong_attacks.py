"""Known-answer tests of the audit's strongest-attacker additions (issue 33): probe
families, identity read from the features, repeated uploads and their bound, photos of
one person pooled, and the strongest-identity summary."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from deepobfuscator.attackers.base import FeatureSet
from deepobfuscator.audit import AuditSettings
from deepobfuscator.audit.attacks import AttackContext

CPU = torch.device("cpu")


def _ctx(attacker: FeatureSet, test: FeatureSet, attrs: list[str], tmp: Path,
         private: list[str] | None = None, **settings) -> AttackContext:
    s = AuditSettings(max_epochs=settings.pop("max_epochs", 15), progress=False,
                      select_positions=0, **settings)
    cfg = SimpleNamespace(privacy=SimpleNamespace(feature_noise=0.0),
                          data=SimpleNamespace(held_out=[], private=private or attrs))
    return AttackContext("obfuscated", cfg, None, attacker, test, attrs, s,  # type: ignore[arg-type]
                         s.fit_settings(CPU, "fp32"), CPU, tmp)


def _fs(z: torch.Tensor, attrs: dict | None = None, ids: np.ndarray | None = None) -> FeatureSet:
    return FeatureSet(z, torch.zeros(len(z), 3, 8, 8), attrs or {}, ids)


# -- probe families ---------------------------------------------------------------------

def test_a_planted_nonlinear_attribute_is_read_by_the_cnn_and_missed_by_the_linear_probe(
        tmp_path):
    """|z| > 0.67 on one number (about half the photos): symmetric in z, so no linear
    reader gets it; the CNN and MLP do, and the audit reports the strongest family."""
    from deepobfuscator.audit.attacks.attributes import AttributeProbes

    g = torch.Generator().manual_seed(0)

    def split(n):
        z = torch.randn(n, 2, 4, 4, generator=g)
        return _fs(z, {"Male": (z[:, 0, 1, 1].abs() > 0.67).long().numpy()})

    ctx = _ctx(split(1500), split(600), ["Male"], tmp_path)
    male = AttributeProbes().run(ctx)["attributes"]["Male"]
    fam = {f: v["balanced_accuracy"] for f, v in male["families"].items()}
    assert fam["linear"] < 0.6, fam
    assert fam["cnn"] > 0.85 and fam["mlp"] > 0.75, fam
    assert male["family"] in ("cnn", "mlp") and male["balanced_accuracy"] == max(fam.values())
    for name in ("probe_Male", "probe_Male_linear", "probe_Male_mlp"):
        assert (tmp_path / f"{name}.safetensors").is_file()


def test_probe_families_and_counts_are_checked_with_one_line_errors():
    from deepobfuscator.audit.attacks.attributes import probe_families
    from deepobfuscator.audit.attacks.pooled import counts
    from deepobfuscator.errors import UserError

    assert probe_families(" cnn, linear,cnn") == ("cnn", "linear")
    assert counts("16,4", "repeats") == [1, 4, 16]
    for bad in ("svm", ""):
        with pytest.raises(UserError, match="probe_families.*linear, mlp, cnn"):
            probe_families(bad)
    for bad in ("0", "4,x", ""):
        with pytest.raises(UserError, match="repeats=.*positive whole numbers"):
            counts(bad, "repeats")


# -- identity read straight from the features -------------------------------------------

def _identity_split(people: int, photos: int, seed: int, signal: float):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(people, 4, 4, 4, generator=g)
    ids = np.repeat(np.arange(people) + 1000 * seed, photos)
    z = signal * centres[np.repeat(np.arange(people), photos)] + \
        torch.randn(people * photos, 4, 4, 4, generator=g)
    return _fs(z, ids=ids)


@pytest.mark.parametrize("signal", [3.0, 0.0])
def test_features_that_are_an_identity_embedding_are_re_identified_and_noise_is_not(
        tmp_path, signal):
    """Features = the person's vector + noise: nearest neighbour and the metric embedder
    re-identify near 1 and verify near AUC 1; pure noise gives chance."""
    from deepobfuscator.audit.attacks.feature_reid import FeatureReidentification
    from deepobfuscator.audit.attacks.identity import StrongestIdentity

    ctx = _ctx(_identity_split(60, 6, 1, signal), _identity_split(25, 5, 2, signal), [],
               tmp_path)
    out = FeatureReidentification().run(ctx)["feature_reid"]
    chance = out["cosine"]["chance_top1"]
    assert math.isclose(chance, 1 / 25)
    from deepobfuscator.attackers.reid import leave_one_out_chance

    loo_chance = leave_one_out_chance(ctx.test.identities)
    assert math.isclose(loo_chance, 4 / 124)  # 4 other photos of the person among 124
    if signal:
        assert out["top1"] > 0.95 and out["embedder"]["top1"] > 0.9, out
        assert out["verification"]["auc"] > 0.95
        assert out["leave_one_out"]["top1"] > 0.95
    else:
        for reader in ("cosine", "euclidean", "embedder"):
            assert out[reader]["top1"] < 3.5 * chance, (reader, out[reader])
            assert out["leave_one_out"][reader] < 3.5 * loo_chance
        assert 0.35 < out["verification"]["auc"] < 0.65
    ident = StrongestIdentity().run(ctx)["identity"]
    assert ident["reads"]["features"] == out["top1"]
    assert ident["reads"]["features, every other photo known"] == out["leave_one_out"]["top1"]
    assert ident["top1"] == max(ident["reads"].values())


def test_leave_one_out_scores_identical_vectors_at_chance():
    from deepobfuscator.attackers.reid import leave_one_out_chance, leave_one_out_top1

    ids = np.repeat(np.arange(7), [2, 3, 4, 5, 2, 9, 3])
    for metric in ("cosine", "euclidean"):
        got = leave_one_out_top1(torch.ones(len(ids), 5), ids, metric, chunk=4)
        assert got == pytest.approx(leave_one_out_chance(ids))


def test_the_identity_figure_is_the_strongest_attack():
    from deepobfuscator.audit.attacks.identity import StrongestIdentity

    ctx = SimpleNamespace(products={"identity_reads": {"features": 0.3, "reconstructions": 0.1,
                                                        "reconstructions (dlib)": 0.4},
                                    "identity_ceiling": 0.9,
                                    # a few probes only: beside the maximum, not in it
                                    "identity_reads_subset": {"prior": {"top1": 0.6,
                                                                        "probes": 30}}})
    attack = StrongestIdentity()
    assert attack.applies(ctx)  # type: ignore[arg-type]
    out = attack.run(ctx)["identity"]  # type: ignore[arg-type]
    assert (out["top1"], out["attack"], out["raw_photo_ceiling"]) == \
        (0.4, "reconstructions (dlib)", 0.9)
    assert out["subset_reads"] == {"prior": {"top1": 0.6, "probes": 30}}
    assert not attack.applies(SimpleNamespace(products={}))  # type: ignore[arg-type]


# -- repeated uploads and the bound -----------------------------------------------------

class _NoisyEncoder(torch.nn.Module):
    def __init__(self, std: float) -> None:
        super().__init__()
        self.noise_std = std

    def upload_noise(self, shape, generator=None):
        return self.noise_std * torch.randn(shape, generator=generator)


def test_averaging_repeated_uploads_recovers_a_planted_signal_as_the_bound_predicts(
        tmp_path):
    """One number carries an attribute as +-a under noise of std s. The mean of N uploads
    has noise s / sqrt(N), so the best reader (the sign) is right with probability
    Phi(a sqrt(N) / s); the cap's bound (a Gaussian channel of SNR N a^2 / s^2) is above
    it for every N, and grows with N."""
    from deepobfuscator.audit.attacks.repeats import mean_of_uploads
    from deepobfuscator.audit.bounds import attribute_bound

    a, s, n_img = 0.5, 2.0, 20000
    y = (torch.rand(n_img, generator=torch.Generator().manual_seed(0)) < 0.5).long()
    clean = torch.zeros(n_img, 1, 1, 1)
    clean[:, 0, 0, 0] = torch.where(y == 1, a, -a)
    ctx = SimpleNamespace(models=SimpleNamespace(encoder=_NoisyEncoder(s)),
                          settings=AuditSettings(wire="float32"))
    last_bound = 0.0
    for n in (1, 4, 16):
        z = mean_of_uploads(ctx, clean, n, torch.Generator().manual_seed(n))  # type: ignore[arg-type]
        noise = (z - clean).flatten()
        assert abs(float(noise.std()) - s / math.sqrt(n)) < 0.03 * s / math.sqrt(n)
        acc = float(((z.flatten() > 0).long() == y).float().mean())
        predicted = 0.5 * (1 + math.erf(a * math.sqrt(n) / s / math.sqrt(2)))
        assert abs(acc - predicted) < 0.015, (n, acc, predicted)
        bits = 0.5 * math.log2(1 + n * a * a / (s * s))
        bound = attribute_bound(bits)
        assert acc <= bound + 0.01 and bound > last_bound, (n, acc, bound)
        last_bound = bound


def test_the_bounds_are_fanos_and_say_when_they_are_vacuous():
    from deepobfuscator.audit.bounds import attribute_bound, binary_entropy_inverse, identity_bound

    assert attribute_bound(0.0) == pytest.approx(0.5)
    assert attribute_bound(1.0) == attribute_bound(8.0) == 1.0  # vacuous from 1 bit on
    p = binary_entropy_inverse(0.5)
    assert -p * math.log2(p) - (1 - p) * math.log2(1 - p) == pytest.approx(0.5)
    assert identity_bound(0.0, 1024) == pytest.approx(0.1)
    assert identity_bound(8.0, 48) == 1.0  # 8 bits name any of 48 people


def test_the_bound_for_n_uploads_is_the_cap_at_the_noise_over_root_n(tiny_config):
    from deepobfuscator.audit.bounds import bounds, upload_bits
    from deepobfuscator.defences import feature_shape, sent_positions
    from deepobfuscator.defences.cap import capacity_bits

    cfg = tiny_config("privacy.normalize_features=true", "privacy.feature_noise=4")
    c, h, w = feature_shape(cfg)
    k = sent_positions(cfg)  # the default sends 16 of the map's numbers
    assert 0 < k < c * h * w
    for n in (1, 16):
        assert upload_bits(cfg, n) == pytest.approx(capacity_bits(c * h * w, 4 / math.sqrt(n),
                                                                  k))
    b = bounds(cfg, [1, 16], 48)
    assert b is not None and b["16"]["bits"] > b["1"]["bits"]
    assert bounds(tiny_config("privacy.feature_noise=0"), [1], 48) is None


def test_the_obfuscators_upload_noise_is_its_noise_through_the_sparse_mask(tiny_config):
    from deepobfuscator.models.split import Obfuscator

    enc = Obfuscator(tiny_config("privacy.feature_noise=0.5", "privacy.normalize_features=true",
                                 "model.upload_positions=4"))
    noise = enc.upload_noise((4000, *enc(torch.zeros(1, 3, 32, 32)).shape[1:]),
                             torch.Generator().manual_seed(0))
    assert abs(float(noise.std()) - 0.5) < 0.01  # the mask is all ones before the finish
    mask = enc.stage("upload").mask
    mask.zero_()
    mask.view(-1)[:4] = 1
    noise = enc.upload_noise((4000, *mask.shape[1:]), torch.Generator().manual_seed(0))
    flat = noise.flatten(1)
    assert torch.all(flat[:, 4:] == 0) and abs(float(flat[:, :4].std()) - 0.5) < 0.02


# -- many photos of one person ----------------------------------------------------------

def test_pooling_photos_of_one_person_reads_a_stable_attribute_and_identity_better(tmp_path):
    """Each photo's probe probability is the person's label blurred by noise, and each
    photo's identity vector the person's vector plus noise: averaging 4 photos reads both
    better than one, and the groups never mix people."""
    from deepobfuscator.audit.attacks.pooled import PooledPhotos, person_groups

    rng = np.random.default_rng(0)
    people, photos = 40, 9
    ids = np.repeat(np.arange(people), photos)
    male_person = rng.random(people) < 0.5
    male = male_person[ids].astype(np.int64)
    probs = 1 / (1 + np.exp(-(np.where(male == 1, 0.6, -0.6) + rng.normal(0, 1.5, len(ids)))))
    vec = torch.from_numpy(rng.normal(size=(people, 16))[ids] * 0.8
                           + rng.normal(size=(len(ids), 16))).float()
    test = _fs(vec.view(-1, 1, 4, 4), {"Male": male}, ids)
    ctx = _ctx(test, test, ["Male"], tmp_path, pooled="1,4")
    ctx.products.update({"probes": {"Male": probs}, "identity_vectors": ("cosine", vec)})
    out = PooledPhotos().run(ctx)["pooled"]
    from deepobfuscator.metrics import balanced_accuracy

    single = balanced_accuracy(male, probs, 0.5)
    assert out["4"]["attributes"]["Male"]["balanced_accuracy"] > single + 0.1
    assert out["largest"] == out["4"] and out["4"]["attributes"]["Male"]["groups"] == 80
    from deepobfuscator.attackers.reid import gallery_probe_split, reid_scores

    g, p = gallery_probe_split(ids, 0)
    one = reid_scores(vec[g], ids[g], vec[p], ids[p])[0]["top1"]
    assert out["4"]["reid"]["top1"] > one + 0.1
    # four known photos of each person name a new one better than one known photo
    assert out["4"]["reid_gallery"]["top1"] > one + 0.1
    for group in person_groups(ids, 4, 0):
        assert len(group) == 4 and len(set(ids[group])) == 1
