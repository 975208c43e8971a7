from pathlib import Path

import pytest

from deepobfuscator.config import load_config, preset_overrides

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# The shipped default (the `cpu` preset: task-continuation, the 1-channel bottleneck, the
# learned gain, the information cap, the sparse upload) scaled down to train in seconds:
# the `tiny` preset's sizes, epochs and batches, every defence as it ships.
TINY = [*preset_overrides("tiny"), "data.private=[Male,Young]", "threads=1"]
# The paper's method as published, for the tests of its adversarial game: its split, the
# full feature map, no cap and no sparse upload
PAPER = [
    "privacy.method=deepobfuscator", "model.bottleneck=0", "privacy.normalize_features=false",
    "privacy.feature_noise=0", "privacy.noise_warmup=0", "model.upload_positions=0",
]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test session caches decoded data in its own folder, never in ~/.cache, and
    keeps its device secret (keyed feature noise) there, never in ~/.config."""
    monkeypatch.setenv("DEEPOBFUSCATOR_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("DEEPOBFUSCATOR_DEVICE_SECRET_FILE",
                       str(tmp_path_factory.getbasetemp() / "device_secret"))


@pytest.fixture
def tiny_config():
    """The shipped default scaled down (TINY), with a test's overrides on top."""

    def make(*overrides: str):
        return load_config("cpu", [*TINY, *overrides])

    return make


def _session_cache_env(tmp_path_factory) -> pytest.MonkeyPatch:
    mp = pytest.MonkeyPatch()
    mp.setenv("DEEPOBFUSCATOR_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    return mp


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """One tiny trained run per session, shared by the deploy tests (deploy_helpers.py)."""
    from deploy_helpers import DEPLOY_TINY

    from deepobfuscator.training import train

    mp = _session_cache_env(tmp_path_factory)
    try:
        return train(load_config("cpu", DEPLOY_TINY),
                     tmp_path_factory.getbasetemp() / "deploy_run", progress=False)
    finally:
        mp.undo()


@pytest.fixture(scope="session")
def tiny_export(tiny_run, tmp_path_factory) -> Path:
    """tiny_run exported through the command line (standalone entry point), as a user would."""
    from deepobfuscator.deploy.cli_commands import main

    out = tmp_path_factory.getbasetemp() / "deploy_export"
    mp = _session_cache_env(tmp_path_factory)
    try:
        assert main(["export", str(tiny_run), "--out", str(out)]) == 0
    finally:
        mp.undo()
    return out


@pytest.fixture(scope="session")
def multi_run(tmp_path_factory) -> Path:
    """tiny_run's settings with three tasks (deploy_helpers.MULTI_TASK), trained once."""
    from deploy_helpers import DEPLOY_TINY, MULTI_TASK

    from deepobfuscator.training import train

    mp = _session_cache_env(tmp_path_factory)
    try:
        return train(load_config("cpu", [*DEPLOY_TINY, MULTI_TASK]),
                     tmp_path_factory.getbasetemp() / "deploy_multi_run", progress=False)
    finally:
        mp.undo()


@pytest.fixture(scope="session")
def multi_export(multi_run, tmp_path_factory) -> Path:
    """multi_run exported (parity-checked on every task's output)."""
    from deepobfuscator.deploy.export import export_run

    mp = _session_cache_env(tmp_path_factory)
    try:
        return export_run(multi_run, tmp_path_factory.getbasetemp() / "deploy_multi_export",
                          parity_images=16)
    finally:
        mp.undo()


@pytest.fixture
def one_thread():
    """Small models on shared cores: one thread avoids OpenMP oversubscription stalls."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
