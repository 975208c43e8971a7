"""Attribute-inference probe and re-identification attacks: known answers on small data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepobfuscator.attackers.attribute_probe import AttributeProbe, roc_curve, score_attribute
from deepobfuscator.attackers.base import FeatureSet, FitSettings, holdout_split
from deepobfuscator.attackers.reid import (
    IdentityEmbedder,
    dlib_available,
    dlib_embed,
    gallery_probe_split,
    reid_scores,
)
from deepobfuscator.data.base import to_tensor_batch
from deepobfuscator.data.synthfaces import generate_synthfaces
from deepobfuscator.metrics import balanced_accuracy, best_threshold

FAST = dict(max_epochs=10, patience=3, batch_size=32, progress=False, precision="fp32")


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


# ---- score_attribute ------------------------------------------------------------------

def test_perfect_scores_are_one():
    y = np.array([0, 0, 1, 1, 1, 0, 1])
    s = score_attribute(y, y.astype(float))
    assert s["accuracy"] == s["balanced_accuracy"] == s["roc_auc"] == 1.0
    assert s["n"] == 7 and s["positive_rate"] == pytest.approx(4 / 7)
    assert s["roc"]["fpr"][0] == 0 and s["roc"]["tpr"][-1] == 1 and 1.0 in s["roc"]["tpr"]


def test_constant_guess_is_chance_and_majority_rate_follows_skew():
    y = np.array([1] * 30 + [0] * 70)
    s = score_attribute(y, np.full(100, 0.3))
    assert s["balanced_accuracy"] == 0.5 and s["roc_auc"] == 0.5
    assert s["accuracy"] == pytest.approx(0.7) and s["majority_rate"] == pytest.approx(0.7)
    assert s["positive_rate"] == pytest.approx(0.3)
    assert s["roc"] == {"fpr": [0.0, 1.0], "tpr": [0.0, 1.0]}  # one threshold: the diagonal


def test_roc_curve_is_thinned_monotone_and_keeps_its_area():
    rng = np.random.default_rng(0)
    y = rng.random(5000) < 0.3
    p = rng.normal(y * 1.0, 1.0)
    fpr, tpr = roc_curve(y, p)
    assert len(fpr) <= 101 and (fpr[0], tpr[0]) == (0, 0) and (fpr[-1], tpr[-1]) == (1, 1)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    area = np.sum(np.diff(fpr) * (np.array(tpr[1:]) + np.array(tpr[:-1])) / 2)
    assert area == pytest.approx(score_attribute(y, p)["roc_auc"], abs=0.01)
    assert roc_curve(np.ones(5), np.arange(5)) == ([], [])  # one class: no curve


# ---- AttributeProbe: a known-answer pair ----------------------------------------------

def _features(n: int, informative: bool, seed: int) -> FeatureSet:
    """(n, 8, 8, 8) noise maps, 30% positives; when informative, positives carry a faint
    blob in one channel (the probe has to find it under the noise)."""
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(n, generator=g) < 0.3).long()
    z = torch.randn(n, 8, 8, 8, generator=g)
    if informative:
        z[:, 3, 2:5, 3:6] += 1.5 * y[:, None, None].float()
    ids = np.arange(n) // 4  # four "photos" per person: the holdout splits by person
    return FeatureSet(z, torch.zeros(n, 1), {"A": y.numpy()}, ids)


@pytest.mark.parametrize("informative", [True, False])
def test_probe_reads_an_encoded_attribute_and_not_noise(informative):
    train, test = _features(800, informative, 0), _features(400, informative, 1)
    probe = AttributeProbe((8, 8, 8), FitSettings(**FAST), width=16)
    curve = probe.fit(train, "A")
    p = probe.infer(test.features)
    assert p.shape == (400,) and np.all((p >= 0) & (p <= 1))
    assert curve.stopped in ("early_stopping", "max_epochs") and len(curve.val_loss) >= 1
    s = score_attribute(test.attributes["A"], p, probe.threshold)
    if informative:
        assert s["balanced_accuracy"] > 0.9 and s["roc_auc"] > 0.95
        assert s["balanced_accuracy_tuned"] > 0.9
    else:  # balanced training: no hiding behind the 70% majority, and nothing to find
        assert abs(s["balanced_accuracy"] - 0.5) < 0.1 and abs(s["roc_auc"] - 0.5) < 0.1
        assert abs(s["balanced_accuracy_tuned"] - 0.5) < 0.1
    # the threshold is the best cut on the probe's own held-out people, not on the test's
    _, va = holdout_split(len(train), FitSettings(**FAST).val_fraction, FitSettings(**FAST).seed,
                          train.identities)
    own = best_threshold(train.attributes["A"][va], probe.infer(train.features[va]), 0.5)
    assert probe.threshold == own


# ---- the attacker's own threshold: known answers ----------------------------------------

def test_the_best_threshold_separates_a_shifted_but_perfect_ranking():
    """A probe that ranks perfectly but answers one class at 0.5 (scores all under it)."""
    y = np.array([0, 0, 0, 1, 1])
    scores = np.array([0.10, 0.20, 0.30, 0.40, 0.45])
    t = best_threshold(y, scores, default=0.5)
    assert 0.30 < t < 0.40 and t == pytest.approx(0.35)
    s = score_attribute(y, scores, t)
    assert s["balanced_accuracy"] == 0.5 and s["balanced_accuracy_tuned"] == 1.0
    assert s["threshold"] == pytest.approx(0.35) and s["roc_auc"] == 1.0


def test_the_best_threshold_matches_an_exhaustive_search_and_breaks_ties_toward_default():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    scores = np.round(rng.random(300) * 0.5 + 0.3 * y, 2)  # many ties
    t = best_threshold(y, scores, default=0.5)
    grid = np.r_[scores.min() - 1, np.unique(scores)]
    best = max(balanced_accuracy(y, scores, c) for c in grid)
    assert balanced_accuracy(y, scores, t) == pytest.approx(best)
    # all-equal scores: every cut gives 0.5; the nearest to the default wins
    assert best_threshold([0, 1, 0, 1], [0.2] * 4, default=0.5) == 0.2
    assert best_threshold([1, 1], [0.1, 0.9], default=0.5) == 0.5  # one class: nothing to tune


# ---- re-identification ----------------------------------------------------------------

def test_gallery_probe_split_properties():
    ids = np.array([5, 5, 5, 7, 9, 9, 2, 2, 2, 2, 11])  # 7 and 11 have a single photo
    gallery, probes = gallery_probe_split(ids, seed=3)
    assert len(np.intersect1d(gallery, probes)) == 0
    assert sorted(ids[gallery]) == [2, 5, 9]  # one photo of each person with >= 2
    assert set(ids[probes]) <= set(ids[gallery]) and len(probes) == 11 - 2 - 3
    again = gallery_probe_split(ids, seed=3)
    assert np.array_equal(again[0], gallery) and np.array_equal(again[1], probes)


def test_reid_scores_perfect_random_and_collapsed():
    rng = np.random.default_rng(0)
    n_id, per = 50, 6
    ids = np.repeat(np.arange(n_id), per)
    gallery, probes = gallery_probe_split(ids, 0)
    centres = rng.normal(size=(n_id, 32))
    perfect = centres[ids] + 0.01 * rng.normal(size=(len(ids), 32))
    s, ranks = reid_scores(perfect[gallery], ids[gallery], perfect[probes], ids[probes])
    assert s["top1"] == 1.0 and s["top5"] == 1.0 and np.all(ranks == 1)
    assert s["n_identities"] == n_id and s["n_probes"] == n_id * (per - 1)
    assert s["chance_top1"] == 1 / n_id and s["chance_top5"] == 5 / n_id
    noise = rng.normal(size=(len(ids), 32))
    s, _ = reid_scores(noise[gallery], ids[gallery], noise[probes], ids[probes])
    assert s["top1"] < 3 / n_id and s["top5"] < 3 * 5 / n_id
    flat = np.ones((len(ids), 8))  # every identity tied: exactly chance, not 0 or 1
    s, ranks = reid_scores(flat[gallery], ids[gallery], flat[probes], ids[probes])
    assert s["top1"] == pytest.approx(1 / n_id) and s["top5"] == pytest.approx(5 / n_id)
    assert np.allclose(ranks, (n_id + 1) / 2)
    with pytest.raises(ValueError):
        reid_scores(perfect[gallery[:3]], ids[gallery[:3]], perfect[probes], ids[probes])


def test_embedder_recognises_unseen_people():
    ds = generate_synthfaces(60, 8, (32, 32), seed=5)
    x, ids = to_tensor_batch(ds.images), ds.identities
    train = ids < 40  # the embedder never sees the 20 test people
    emb = IdentityEmbedder((32, 32), FitSettings(**{**FAST, "max_epochs": 8}))
    curve = emb.fit(x[torch.from_numpy(train)], ids[train])
    assert curve.best_epoch >= 0
    xt, it = x[torch.from_numpy(~train)], ids[~train]
    gallery, probes = gallery_probe_split(it, 0)
    e = emb.embed(xt)
    assert e.shape == (len(xt), 128) and torch.allclose(e.norm(dim=1), torch.ones(len(xt)))
    s, _ = reid_scores(e[gallery], it[gallery], e[probes], it[probes])
    assert s["top1"] > 3 * s["chance_top1"], s


def test_dlib_embed_is_optional():
    x = torch.rand(2, 3, 32, 32)
    if not dlib_available():
        assert dlib_embed(x) is None
        pytest.skip("dlib and face_recognition_models are not installed")
    e = dlib_embed(x)
    assert e is not None and e.shape == (2, 128)


def test_verification_pairs_are_balanced_and_name_same_and_different_people():
    from deepobfuscator.attackers.reid import verification_pairs

    ids = np.repeat(np.arange(12), [1, 2, 3, 4, 1, 2, 5, 1, 1, 2, 3, 1])
    a, b, same = verification_pairs(ids, seed=0)
    assert same.sum() == (~same).sum() > 0
    assert (ids[a][same] == ids[b][same]).all() and (a[same] != b[same]).all()
    assert (ids[a][~same] != ids[b][~same]).all()
    again = verification_pairs(ids, seed=0)
    assert all(np.array_equal(x, y) for x, y in zip((a, b, same), again, strict=True))
    assert len(verification_pairs(np.arange(5), seed=0)[2]) == 0  # nobody twice: no pairs


def test_verification_has_known_answers():
    from deepobfuscator.attackers.reid import verification_pairs, verification_scores

    ids = np.repeat(np.arange(40), 3)
    a, b, same = verification_pairs(ids, seed=1)
    identity = np.eye(40)[ids] + 0.01 * np.random.default_rng(0).normal(size=(len(ids), 40))
    perfect = verification_scores(identity[a], identity[b], same, seed=0)
    assert perfect["auc"] == 1.0 and perfect["accuracy"] == 1.0
    noise = np.random.default_rng(1).normal(size=(len(ids), 16))
    blind = verification_scores(noise[a], noise[b], same, seed=0)
    assert abs(blind["auc"] - 0.5) < 0.12 and abs(blind["accuracy"] - 0.5) < 0.12
    flipped = verification_scores(identity[a], -identity[b], same, seed=0)
    assert flipped["auc"] == 0.0  # a recogniser that inverts identity is read as such


def test_euclidean_reid_has_known_answers():
    """Identities that differ in scale only: cosine cannot tell them apart (chance), the
    Euclidean distance can (top-1 1.0); an unknown metric is refused."""
    ids = np.repeat(np.arange(6), 3)
    gallery, probes = gallery_probe_split(ids, 0)
    x = (ids[:, None] + 1.0) * np.ones((len(ids), 4))  # person k: the vector (k+1)*1
    cos, _ = reid_scores(x[gallery], ids[gallery], x[probes], ids[probes])
    euc, _ = reid_scores(x[gallery], ids[gallery], x[probes], ids[probes], metric="euclidean")
    assert cos["top1"] == pytest.approx(1 / 6) and euc["top1"] == 1.0
    with pytest.raises(ValueError, match="metric='manhattan'"):
        reid_scores(x[gallery], ids[gallery], x[probes], ids[probes], metric="manhattan")


def test_feature_reid_standardises_before_matching():
    """The feature attack standardises each number on the attacker split: identities
    carried by twenty small numbers beside one huge number that varies per photo are
    found (without standardisation the huge number decides, at chance)."""
    from types import SimpleNamespace

    from deepobfuscator.attackers.base import FeatureSet
    from deepobfuscator.audit.attacks.feature_reid import FeatureReidentification

    rng = np.random.default_rng(0)
    codes = rng.normal(size=(10, 20))  # each person's code
    ids = np.repeat(np.arange(10), 3)

    def feats(who: np.ndarray) -> torch.Tensor:
        clutter = 1e4 * rng.normal(size=(len(who), 1))
        ident = 1e-2 * (codes[who] + 0.1 * rng.normal(size=(len(who), 20)))
        return torch.from_numpy(np.concatenate([clutter, ident], 1)[:, :, None, None]).float()

    test = FeatureSet(feats(ids), torch.zeros(len(ids), 3, 4, 4), {}, ids)
    attacker = FeatureSet(feats(rng.integers(0, 10, 200)), torch.zeros(200, 3, 4, 4), {}, None)
    ctx = SimpleNamespace(test=test, attacker=attacker, settings=SimpleNamespace(seed=0),
                          products={})
    out = FeatureReidentification().run(ctx)["feature_reid"]  # type: ignore[arg-type]
    assert out["top1"] > 0.9, out
    gallery, probes = gallery_probe_split(ids, 0)
    raw = test.features.flatten(1).numpy()
    plain, _ = reid_scores(raw[gallery], ids[gallery], raw[probes], ids[probes],
                           metric="euclidean")
    assert plain["top1"] < 0.5  # the huge number decides without standardisation
