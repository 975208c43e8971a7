"""data.augment=photo (issue 36, item 3): training images varied as real photos vary,
drawn from the run's seed and the batch, so a killed and resumed run ends bit for bit
where an uninterrupted one does; validation never augments."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from resume_helpers import assert_resumes_bit_for_bit, weights

from deepobfuscator.errors import UserError
from deepobfuscator.training import augment, train


def _faces(n: int = 8) -> torch.Tensor:
    from deepobfuscator.data.synthfaces import generate_synthfaces

    ds = generate_synthfaces(n, 1, (48, 48), seed=1)
    return torch.from_numpy(ds.images).permute(0, 3, 1, 2).float() / 255


def test_photo_varies_each_image_within_range_and_is_a_function_of_its_key() -> None:
    x = _faces()
    rows = np.arange(8)
    a = augment.photo(x, augment.generator(0, rows))
    assert a.shape == x.shape and float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert torch.equal(a, augment.photo(x, augment.generator(0, rows))), "same key, same draw"
    assert not torch.equal(a, augment.photo(x, augment.generator(1, rows))), "seed matters"
    assert not torch.equal(a, augment.photo(x, augment.generator(0, rows + 1)))
    change = (a - x).abs().mean(dim=(1, 2, 3))
    # every image moved, none beyond recognition (a 5% shift, 10 degrees, 20% colour)
    assert bool((change > 0.005).all()) and bool((change < 0.25).all()), change
    # mirrored images exist in a batch of 8 (probability 1 - 2**-8 for this key: fixed)
    flipped = augment.photo(x.flip(3), augment.generator(0, rows))
    assert not torch.equal(flipped, a)


def test_augmented_training_resumes_bit_for_bit_and_differs_from_plain(tiny_config, tmp_path,
                                                                      monkeypatch) -> None:
    cfg = tiny_config("data.augment=photo", "train.adversarial.epochs=1")
    run = assert_resumes_bit_for_bit(cfg, tmp_path, monkeypatch)
    monkeypatch.undo()
    plain = train(tiny_config("train.adversarial.epochs=1"), tmp_path / "plain", progress=False)
    a, b = weights(run), weights(plain)
    assert any(not torch.equal(a["encoder"][k], b["encoder"][k]) for k in a["encoder"])


def test_a_bad_augment_is_one_line(tiny_config) -> None:
    with pytest.raises(UserError, match=r"data.augment='jitter' is not valid; choose one of"):
        tiny_config("data.augment=jitter")
