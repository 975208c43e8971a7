"""privacy.erase: the phone projects a private attribute's direction out of the upload,
fitted inside each task class on the defender's data (defences/erasure.py).

Known answers on planted signals first (the basis, what a linear probe can still read,
that no power is added), then the trained obfuscator: the erasure is fitted when training
ends, `choose-upload --erase` on a finished run equals training with the key, and the
exported phone carries it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from deepobfuscator.cli import main
from deepobfuscator.config import ConfigError, config_from_dict, load_config
from deepobfuscator.defences.erasure import erase, erasure_basis
from deepobfuscator.deploy.client import DeviceObfuscator
from deepobfuscator.deploy.export import export_run
from deepobfuscator.runs import load_run, read_run_config
from deepobfuscator.training import train


def _planted(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features (n, 6): column 0 carries the task, column 1 the attribute *inside* each
    task class, column 2 a mix of both; the rest is noise. The attribute is correlated
    with the task (as Male is with Smiling on CelebA)."""
    rng = np.random.default_rng(seed)
    task = rng.integers(0, 2, n)
    attr = np.where(rng.random(n) < 0.35 + 0.3 * task, 1, 0)
    x = rng.normal(size=(n, 6))
    x[:, 0] += 3.0 * task
    x[:, 1] += 2.0 * attr
    x[:, 2] += 1.5 * attr + 1.5 * task
    return x, task, attr


def _linear_probe(x: np.ndarray, y: np.ndarray, xt: np.ndarray, yt: np.ndarray) -> float:
    """Balanced accuracy of a least-squares linear read-out (fitted on x, scored on xt)."""
    a = np.c_[x, np.ones(len(x))]
    w = np.linalg.lstsq(a, np.where(y == 1, 1.0, -1.0), rcond=None)[0]
    pred = np.c_[xt, np.ones(len(xt))] @ w > 0
    return float(np.mean([np.mean(pred[yt == c] == c) for c in (0, 1)]))


def test_the_basis_removes_the_attribute_inside_task_classes_and_keeps_the_task():
    x, task, attr = _planted(6000, 0)
    q = erasure_basis(x, task, attr[:, None])
    assert q.shape == (6, 1)
    np.testing.assert_allclose(q.T @ q, np.eye(1), atol=1e-12)  # orthonormal
    erased = x - (x @ q) @ q.T

    def task_dir(f: np.ndarray) -> np.ndarray:
        return f[task == 1].mean(0) - f[task == 0].mean(0)

    # the task guard: the difference of the task's class means is kept exactly
    np.testing.assert_allclose(task_dir(erased), task_dir(x), atol=1e-10)
    # inside the task classes, no covariance with the attribute is left but along the
    # task's own direction
    t_hat = task_dir(x) / np.linalg.norm(task_dir(x))
    cross = sum((erased[m] - erased[m].mean(0)).T @ (attr[m] - attr[m].mean())
                for m in (task == 0, task == 1)) / len(x)
    assert np.abs(cross - t_hat * (t_hat @ cross)).max() < 1e-10
    xt, tt, at = _planted(6000, 1)
    et = xt - (xt @ q) @ q.T
    # the task stays nearly as readable (its class means are kept; a read-out can no
    # longer use the attribute's own number to cancel the attribute's part of the task's
    # numbers); the attribute falls close to what the task alone tells
    assert _linear_probe(erased, task, et, tt) > _linear_probe(x, task, xt, tt) - 0.03
    from_task_only = _linear_probe(task[:, None].astype(float), attr, tt[:, None], at)
    before, after = _linear_probe(x, attr, xt, at), _linear_probe(erased, attr, et, at)
    assert before > 0.8 and after < from_task_only + 0.05 < before - 0.1


def test_an_attribute_along_the_task_direction_is_not_erased():
    """Where the attribute moves the upload only along the task's own direction (LFW's
    smiles), the guard leaves nothing to remove: erasing it would erase the task."""
    rng = np.random.default_rng(4)
    task = rng.integers(0, 2, 4000)
    attr = rng.integers(0, 2, 4000)
    x = rng.normal(size=(4000, 5))
    x[:, 0] += 3.0 * task + 1.0 * attr  # the attribute scales the task's own number
    q = erasure_basis(x, task, attr[:, None])
    assert q.shape[1] == 0 or np.abs(q[0]).max() < 0.2  # at most sampling noise elsewhere
    erased = x - (x @ q) @ q.T
    xt = rng.normal(size=(4000, 5))
    tt = rng.integers(0, 2, 4000)
    xt[:, 0] += 3.0 * tt
    assert _linear_probe(erased, task, xt - (xt @ q) @ q.T, tt) > 0.9


def test_an_attribute_that_is_the_task_answer_leaves_nothing_to_erase():
    """Inside a task class the task answer never varies: the erasure cannot remove the
    task (or what only the task tells) whatever it is asked."""
    x, task, _ = _planted(2000, 3)
    assert erasure_basis(x, task, task[:, None]).shape == (6, 0)


def test_the_basis_keeps_unsent_numbers_and_never_adds_power():
    x, task, attr = _planted(3000, 2)
    q = erasure_basis(x, task, attr[:, None], positions=np.array([1, 2, 4]))
    assert np.all(q[[0, 3, 5]] == 0)  # numbers that are not sent stay untouched
    z = torch.from_numpy(x).float().view(3000, 1, 2, 3)
    out = erase(z, torch.from_numpy(q).float())
    assert out.shape == z.shape
    assert torch.all(out.flatten(1).norm(dim=1) <= z.flatten(1).norm(dim=1) + 1e-5)
    assert torch.equal(erase(z, torch.zeros(6, 1)), z)  # before the fit: the identity
    # the same data gives the same basis (a fixed sign): a resumed run fits the same
    np.testing.assert_array_equal(q, erasure_basis(x, task, attr[:, None],
                                                   positions=np.array([1, 2, 4])))


def test_the_key_is_checked_and_leaves_old_hashes_alone():
    with pytest.raises(ConfigError, match=r"not in data\.private"):
        load_config("cpu", ["privacy.erase=[Eyeglasses]"])
    with pytest.raises(ConfigError, match="upload_tune_epochs"):
        load_config("cpu", ["privacy.erase=[Male]", "train.upload_tune_epochs=0"])
    with pytest.raises(ConfigError, match="twice"):
        load_config("cpu", ["data.private=[Male,Young]", "privacy.erase=[Male,Male]"])
    d = load_config("cpu").to_dict()
    del d["schema"], d["privacy"]["erase"]  # a run saved before the key: no erasure, old hash
    old = config_from_dict(d)
    assert old.privacy.erase == [] and old.fingerprint() == load_config(
        "cpu", ["privacy.erase=[]"]).fingerprint()
    assert load_config("cpu", ["privacy.erase=[Male]"]).fingerprint() != old.fingerprint()
    from deepobfuscator.config import no_privacy_overrides

    # the no-privacy baseline erases nothing, whatever the defended run asks for
    assert load_config("cpu", ["privacy.erase=[Male]", *no_privacy_overrides()]).privacy.erase == []


CAPPED = ["model.bottleneck=1", "privacy.normalize_features=true", "privacy.feature_noise=2",
          "model.position_gain=10", "privacy.method=task-continuation", "train.task.epochs=2",
          "train.adversarial.epochs=1", "train.checkpoint_every_s=0",
          "model.upload_positions=8"]


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    from conftest import TINY, _session_cache_env

    mp = _session_cache_env(tmp_path_factory)
    try:
        return train(load_config("cpu", [*TINY, *CAPPED, "privacy.erase=[]"]),
                     tmp_path_factory.mktemp("erase") / "plain", progress=False)
    finally:
        mp.undo()


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sb = b.state_dict()
    return all(torch.equal(v, sb[k]) for k, v in a.state_dict().items())


def test_training_with_erase_equals_erasing_after_training(plain_run, tmp_path):
    """The erasure is fitted after the last stage from the trained phone and the
    defender's data alone: `choose-upload --erase Male` on the run trained without it is
    bit for bit the run trained with privacy.erase=[Male], under the same fingerprint."""
    from conftest import TINY

    after = tmp_path / "after"
    assert main(["choose-upload", str(plain_run), "--erase", "Male", "--out", str(after),
                 "--quiet"]) == 0
    cfg = load_config("cpu", [*TINY, *CAPPED, "privacy.erase=[Male]"])
    assert read_run_config(after).fingerprint() == cfg.fingerprint()
    during = train(cfg, tmp_path / "during", progress=False)
    (_, a), (_, b), (_, plain) = load_run(after), load_run(during), load_run(plain_run)
    assert _same(a.encoder, b.encoder) and _same(a.classifier, b.classifier)
    basis = b.encoder.stage("erase").basis
    assert basis is not None and basis.shape == (64, 1)
    np.testing.assert_allclose(float(basis.norm()), 1.0, atol=1e-5)
    mask = b.encoder.stage("upload").mask.flatten()
    assert torch.all(basis[mask == 0] == 0)  # fitted on the 8 numbers sent only
    # the phone's weights and its chosen numbers are the plain run's; the cloud re-fitted
    weights = {k: v for k, v in plain.encoder.state_dict().items() if k != "stages.erase.basis"}
    assert all(torch.equal(v, b.encoder.state_dict()[k]) for k, v in weights.items())
    assert not _same(plain.classifier, b.classifier)
    history = [json.loads(line) for line in (during / "metrics.jsonl").read_text().splitlines()]
    assert history[-1]["stage"] == "upload" and history[-1]["erased"] == ["Male"]
    # noise-free uploads have nothing left along the erased direction
    x = torch.rand(16, 3, 32, 32)
    b.encoder.eval()
    b.encoder.noise_std = 0.0
    with torch.no_grad():
        assert float((b.encoder(x).flatten(1) @ basis).abs().max()) < 1e-5


def test_erase_is_refused_for_an_attribute_the_run_has_no_labels_for(plain_run, tmp_path,
                                                                      capsys):
    assert main(["choose-upload", str(plain_run), "--erase", "Eyeglasses", "--out",
                 str(tmp_path / "x"), "--quiet"]) != 0
    assert "data.private" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_the_exported_phone_carries_the_erasure(plain_run, tmp_path):
    erased = tmp_path / "erased"
    assert main(["choose-upload", str(plain_run), "--erase", "Male", "--out", str(erased),
                 "--quiet"]) == 0
    out = export_run(erased, tmp_path / "export", parity_images=4, mobile=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["features"]["erased"]["attributes"] == ["Male"]
    _, models = load_run(erased)
    positions = np.array(manifest["features"]["positions"]["flat_indices"])
    direction = models.encoder.stage("erase").basis.numpy()[positions, 0]  # on the 8 numbers sent
    client = DeviceObfuscator(out)
    f = client.features(np.random.default_rng(0).random((8, 3, 32, 32), np.float32),
                        noise=False)
    assert float(np.abs(f.reshape(8, -1) @ direction).max()) < 1e-4


def test_the_phone_budget_counts_the_projection():
    from deepobfuscator.models.budget import phone_budget

    plain = phone_budget(load_config("cpu", ["data.private=[Male,Young]"]))
    erased = phone_budget(load_config("cpu", ["data.private=[Male,Young]",
                                              "privacy.erase=[Male,Young]"]))
    assert erased.phone_macs - plain.phone_macs == 2 * 256 * 2  # x Q, then (x Q) Q^T
    assert erased.upload_bytes == plain.upload_bytes and erased.cloud_macs == plain.cloud_macs


def test_choose_upload_and_the_erasure_serve_several_tasks(tmp_path):
    """A run answering three tasks (one of them 4-class): `choose-upload` picks positions by
    the tasks' mean validation AUC and erases Male inside every combination of answers;
    the result loads, and its noise-free uploads carry nothing along the erased direction."""
    from conftest import TINY

    tasks = ("data.task=[Smiling,Eyeglasses,{name: hair, classes: [Black_Hair, Blond_Hair, "
             "Brown_Hair, other]}]")
    run = train(load_config("cpu", [*TINY, *CAPPED, "privacy.erase=[]", tasks]),
                tmp_path / "run", progress=False)
    out = tmp_path / "chosen"
    assert main(["choose-upload", str(run), "--positions", "4", "--erase", "Male", "--out",
                 str(out), "--quiet"]) == 0
    cfg, models = load_run(out)
    assert cfg.data.task == load_config("cpu", [tasks]).data.task
    assert models.classifier.head.outputs == 1 + 1 + 4
    basis = models.encoder.stage("erase").basis
    assert float(basis.norm()) > 0.5
    models.encoder.eval()
    models.encoder.noise_std = 0.0
    with torch.no_grad():
        z = models.encoder(torch.rand(16, 3, 32, 32)).flatten(1)
    assert float((z @ basis).abs().max()) < 1e-5
    assert int((z.abs().sum(0) > 0).sum()) <= 4  # the 4 positions chosen
