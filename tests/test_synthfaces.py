"""synthfaces: the embedded default dataset (shapes, determinism, labels, cache, learnability)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn

from deepobfuscator.data import synthfaces
from deepobfuscator.data.base import NO_PARTITION, DataError, FaceDataset
from deepobfuscator.data.synthfaces import ATTRIBUTES, generate_synthfaces, load_synthfaces

N_IDS, PER_ID = 400, 8  # Male is per identity: many identities make its test score meaningful


@pytest.fixture(scope="module")
def faces() -> FaceDataset:
    return generate_synthfaces(N_IDS, PER_ID, (64, 64), seed=1)


def test_shapes_dtypes_and_labels() -> None:
    ds = generate_synthfaces(6, 3, (64, 64), seed=0)
    assert ds.images.shape == (18, 64, 64, 3) and ds.images.dtype == np.uint8
    assert ds.attributes.shape == (18, len(ATTRIBUTES)) and ds.attributes.dtype == np.int8
    assert set(np.unique(ds.attributes)) <= {0, 1}
    assert ds.attribute_names == ATTRIBUTES
    assert ATTRIBUTES[:4] == ["Smiling", "Male", "Young", "Eyeglasses"]
    assert ds.identities.dtype == np.int64
    assert ds.identities.tolist() == [i for i in range(6) for _ in range(3)]
    assert (ds.partitions == NO_PARTITION).all()
    assert ds.source == "synthfaces" and ds.has_identities
    assert ds.files[0] == "synth_000000_00.png" and ds.files[-1] == "synth_000005_02.png"
    assert all(re.fullmatch(r"synth_\d{6}_\d{2}\.png", f) for f in ds.files)
    assert len(set(ds.files)) == len(ds.files)
    assert ds.images.std() > 20 and ds.images.min() < 40 and ds.images.max() > 200


@pytest.mark.parametrize("size", [(109, 89), (218, 178), (32, 32), (48, 80)])
def test_any_size_including_non_square(size: tuple[int, int]) -> None:
    ds = generate_synthfaces(3, 2, size, seed=5)
    h, w = size
    assert ds.images.shape == (6, h, w, 3)
    for img in ds.images.astype(np.float32):
        # a face sits in the middle: the centre differs from the background in the corners
        centre = img[h // 2 - h // 8 : h // 2 + h // 8, w // 2 - w // 8 : w // 2 + w // 8]
        corners = np.concatenate([img[:3, :3], img[:3, -3:]]).reshape(-1, 3)
        assert np.abs(centre.mean((0, 1)) - corners.mean(0)).max() > 8 or centre.std() > 20


def test_same_face_at_different_resolutions() -> None:
    # drawn in normalised coordinates: a downscaled 218x178 render matches the 109x89 one
    from PIL import Image

    big = generate_synthfaces(2, 2, (218, 178), seed=4).images[0]
    small = generate_synthfaces(2, 2, (109, 89), seed=4).images[0].astype(np.float32)
    down = np.asarray(Image.fromarray(big).resize((89, 109), Image.Resampling.BOX), np.float32)
    assert np.abs(down - small).mean() < 12


def test_deterministic_per_seed() -> None:
    a = generate_synthfaces(5, 4, (48, 48), seed=7)
    b = generate_synthfaces(5, 4, (48, 48), seed=7)
    c = generate_synthfaces(5, 4, (48, 48), seed=8)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.attributes, b.attributes)
    assert a.files == b.files
    assert not np.array_equal(a.images, c.images)


def test_attribute_rates_like_celeba(faces: FaceDataset) -> None:
    assert len(faces) == N_IDS * PER_ID and len(np.unique(faces.identities)) == N_IDS
    rate = dict(zip(ATTRIBUTES, faces.attributes.mean(0), strict=True))
    assert 0.33 <= rate["Male"] <= 0.47
    assert 0.67 <= rate["Young"] <= 0.83
    assert 0.07 <= rate["Eyeglasses"] <= 0.18
    assert 0.42 <= rate["Smiling"] <= 0.54
    for name in ATTRIBUTES:
        assert 0.02 < rate[name] < 0.98, name
    # Male and Young are traits of the person; Smiling changes from image to image
    per_id = faces.attributes.reshape(N_IDS, PER_ID, -1)
    for name in ("Male", "Young"):
        j = ATTRIBUTES.index(name)
        assert (per_id[:, :, j] == per_id[:, :1, j]).all(), name
    smiling = per_id[:, :, ATTRIBUTES.index("Smiling")]
    assert ((smiling.min(1) == 0) & (smiling.max(1) == 1)).mean() > 0.6
    # entangled like photos: men wear no lipstick, beards are male
    male = faces.attribute("Male").astype(bool)
    assert faces.attribute("Wearing_Lipstick")[male].sum() == 0
    assert faces.attribute("No_Beard")[~male].all()


def test_identity_traits_are_stable(faces: FaceDataset) -> None:
    ds = faces.subset(np.arange(40 * PER_ID))
    x = ds.images[:, 12:52, 16:48].reshape(len(ds), -1).astype(np.float64)
    x -= x.mean(1, keepdims=True)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    corr = x @ x.T
    same = ds.identities[:, None] == ds.identities[None, :]
    within = corr[same & ~np.eye(len(ds), dtype=bool)].mean()
    between = corr[~same].mean()
    assert within > between + 0.15


def test_load_trims_to_n_images() -> None:
    ds = load_synthfaces(n_images=25, images_per_identity=10, size=(32, 32), use_cache=False)
    assert len(ds) == 25 and ds.images.shape == (25, 32, 32, 3)
    assert ds.identities.max() == 2 and (ds.identities == 2).sum() == 5
    assert ds.files[-1] == "synth_000002_04.png"
    full = generate_synthfaces(3, 10, (32, 32), seed=0)
    assert np.array_equal(ds.images, full.images[:25])


def test_cache_reuses_without_regenerating(tmp_path, monkeypatch) -> None:
    args = dict(n_images=30, images_per_identity=10, size=(32, 32), seed=3, cache_dir=tmp_path)
    first = load_synthfaces(**args)
    assert len(list(tmp_path.iterdir())) == 1

    def fail(*a, **k):
        raise AssertionError("regenerated although cached")

    monkeypatch.setattr(synthfaces, "generate_synthfaces", fail)
    second = load_synthfaces(**args)
    assert np.array_equal(first.images, second.images)
    assert np.array_equal(first.attributes, second.attributes)
    assert np.array_equal(first.identities, second.identities)
    assert first.files == second.files and second.attribute_names == ATTRIBUTES
    assert second.source == "synthfaces"
    with pytest.raises(AssertionError, match="regenerated"):  # the key includes the seed
        load_synthfaces(**{**args, "seed": 4})
    with pytest.raises(AssertionError, match="regenerated"):  # use_cache=False always builds
        load_synthfaces(**args, use_cache=False)


def test_bad_arguments() -> None:
    with pytest.raises(DataError):
        load_synthfaces(n_images=0, use_cache=False)
    with pytest.raises(DataError):
        generate_synthfaces(2, 2, (8, 8), seed=0)
    with pytest.raises(DataError):
        generate_synthfaces(0, 2, (32, 32), seed=0)


def test_small_cnn_reads_male_and_smiling_on_unseen_identities(faces: FaceDataset) -> None:
    """The point of the dataset: task and private attributes are both learnable from pixels."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small convs: one thread is fastest and immune to busy CPUs
    try:
        x = torch.from_numpy(faces.images).permute(0, 3, 1, 2).float().div(255)
        cols = [ATTRIBUTES.index("Male"), ATTRIBUTES.index("Smiling")]
        y = torch.from_numpy(faces.attributes[:, cols].astype(np.float32))
        train = torch.from_numpy(faces.identities < int(N_IDS * 0.7))  # identity-disjoint
        x_tr, y_tr, x_te, y_te = x[train], y[train], x[~train], y[~train]
        net = nn.Sequential(
            nn.Conv2d(3, 16, 5, 2, 2), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Flatten(), nn.Linear(32 * 8 * 8, 2),
        )  # fmt: skip
        epochs, batch = 10, 64
        opt = torch.optim.Adam(net.parameters(), 3e-3)
        steps = epochs * -(-len(x_tr) // batch)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=steps)
        for _ in range(epochs):
            net.train()
            perm = torch.randperm(len(x_tr))
            for i in range(0, len(x_tr), batch):
                idx = perm[i : i + batch]
                xb = x_tr[idx]
                xb = torch.where(torch.rand(len(idx), 1, 1, 1) < 0.5, xb, xb.flip(3))
                loss = nn.functional.binary_cross_entropy_with_logits(net(xb), y_tr[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
        net.eval()
        with torch.no_grad():
            acc = ((net(x_te) > 0).float() == y_te).float().mean(0)
    finally:
        torch.set_num_threads(threads)
    male_acc, smile_acc = acc.tolist()
    print(f"held-out identities: Male acc {male_acc:.3f}, Smiling acc {smile_acc:.3f}")
    assert male_acc >= 0.90
    assert smile_acc >= 0.90
    assert male_acc < 0.999 or smile_acc < 0.999  # a real problem, not a lookup
