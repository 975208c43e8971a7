from pathlib import Path

import pytest

from deepobfuscator.config import load_config

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

TINY = [
    "data.image_size=[32,32]", "data.synth_images=160", "data.synth_images_per_identity=8",
    "model.width=0.125", "model.fc_hidden=32", "model.split_block=2",
    "train.task.epochs=1", "train.reconstructor.epochs=1", "train.adversaries.epochs=1",
    "train.adversarial.epochs=2", "train.task.batch_size=16", "train.reconstructor.batch_size=16",
    "train.adversaries.batch_size=16", "train.adversarial.batch_size=16",
    "privacy.lambda_decay_after=0", "data.private=[Male,Young]", "threads=1",
    "privacy.method=deepobfuscator", "model.bottleneck=0",
    "privacy.normalize_features=false", "privacy.feature_noise=0",  # no cap unless a test asks
]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test session caches decoded data in its own folder, never in ~/.cache."""
    monkeypatch.setenv("DEEPOBFUSCATOR_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture
def tiny_config():
    """A complete four-stage config that trains in seconds."""

    def make(*overrides: str):
        return load_config("cpu", [*TINY, *overrides])

    return make
