import json

import pytest
import torch
from conftest import PAPER
from safetensors.torch import load_file

from deepobfuscator.config import load_config, no_privacy_overrides
from deepobfuscator.data.base import DataError
from deepobfuscator.models import build_models
from deepobfuscator.privacy import fixed_noise_image, settings_for_size
from deepobfuscator.runs import RunError, RunPaths, load_run
from deepobfuscator.training import steps, train
from deepobfuscator.training.steps import Batch, StepContext, lambda_at, make_optimizers


def _weights(run):
    paths = RunPaths(run)
    return {n: load_file(str(paths.weight_file(n)))
            for n in ("encoder", "classifier", "adversaries", "reconstructor")}


def test_four_stage_training_writes_a_complete_run_folder(tmp_path, tiny_config):
    run = train(tiny_config(*PAPER), tmp_path / "run", progress=False)
    paths = RunPaths(run)
    for p in (paths.config, paths.preprocessing, paths.metrics, paths.checkpoint, paths.info):
        assert p.is_file(), p
    assert {p.stem for p in paths.splits.glob("*.json")} == {
        "defender_train", "defender_val", "attacker", "test"}
    splits = {r: set(json.loads((paths.splits / f"{r}.json").read_text())["files"])
              for r in ("defender_train", "defender_val", "attacker", "test")}
    names = list(splits)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not splits[a] & splits[b], f"{a} and {b} overlap"
    records = [json.loads(line) for line in paths.metrics.read_text().splitlines()]
    assert [r["stage"] for r in records] == [
        "task", "reconstructor", "adversaries", "adversarial", "adversarial"]
    assert [r["lambda"] for r in records[3:]] == [10.0, 5.0]
    last = records[-1]
    assert {"val_task_acc", "val_recon_msssim", "val_adv_Male_bal_acc",
            "val_adv_Young_bal_acc"} <= set(last)
    info = json.loads(paths.info.read_text())
    assert info["status"] == "complete" and info["feature_shape"] == [16, 8, 8]
    pre = json.loads(paths.preprocessing.read_text())
    assert pre["size"] == [32, 32] and pre["crop"] == "square"
    cfg, models = load_run(run)
    assert cfg.fingerprint() == tiny_config(*PAPER).fingerprint()
    assert models.encoder(torch.rand(1, 3, 32, 32)).shape == (1, 16, 8, 8)


def test_baseline_trains_only_the_task_stage(tmp_path, tiny_config):
    run = train(tiny_config(*no_privacy_overrides()), tmp_path / "base", progress=False)
    records = [json.loads(x) for x in RunPaths(run).metrics.read_text().splitlines()]
    assert [r["stage"] for r in records] == ["task"]
    load_run(run)  # complete and loadable


def test_rerunning_a_different_config_in_the_same_folder_is_refused(tmp_path, tiny_config):
    train(tiny_config(), tmp_path / "run", progress=False)
    with pytest.raises(RunError, match="different config.*seed"):
        train(tiny_config("seed=5"), tmp_path / "run", progress=False)


def test_unknown_attribute_lists_valid_names(tmp_path, tiny_config):
    with pytest.raises(DataError, match="unknown attribute.*Gender.*valid names:.*Male"):
        train(tiny_config("data.private=[Gender]"), tmp_path / "r", progress=False)


def test_load_run_of_unfinished_folder_says_how_to_fix(tmp_path, tiny_config):
    with pytest.raises(RunError, match="not a run folder"):
        load_run(tmp_path)


@pytest.mark.parametrize("kind, changed", [
    ("noise", {"encoder"}),
    ("reconstruction", {"encoder"}),
    ("attribute", {"encoder"}),
    ("adversaries", {"reconstructor", "adversaries"}),
    ("classifier", {"classifier"}),
])
def test_one_adversarial_step_changes_exactly_its_networks(kind, changed):
    cfg = load_config("cpu", ["data.image_size=[32,32]", "model.width=0.125",
                              "model.fc_hidden=16", "data.private=[Male,Young]"])
    torch.manual_seed(0)
    models = build_models(cfg)
    ctx = StepContext(cfg, models, make_optimizers(models, "adversarial", 1e-2),
                      settings_for_size(32, 32), fixed_noise_image((3, 32, 32), 0))
    before = {n: {k: v.clone() for k, v in m.state_dict().items()}
              for n, m in models.named().items()}
    batch = Batch(torch.rand(8, 3, 32, 32), torch.randint(0, 2, (8,)).float(),
                  torch.randint(0, 2, (8, 2)).float())
    steps.rotation_step(ctx, batch, kind, lam=10.0)
    for name, module in models.named().items():
        moved = any(not torch.equal(before[name][k], v) for k, v in module.state_dict().items())
        assert moved == (name in changed), f"{kind}: {name} moved={moved}"


def test_lambda_schedule_is_the_papers():
    cfg = load_config("paper")
    assert [lambda_at(cfg, e) for e in range(20)] == [10.0] * 11 + [9.0 - i for i in range(9)]


def test_eval_max_images_below_the_eval_batch(tmp_path, tiny_config):
    """Validation scored on fewer images than one eval batch (labels and scores agree)."""
    run = train(tiny_config("privacy.method=none", "train.eval_max_images=10"), tmp_path / "r",
                progress=False)
    records = [json.loads(x) for x in RunPaths(run).metrics.read_text().splitlines()]
    # the logged accuracy is the final networks' on exactly the first 10 validation photos,
    # each scored against its own label: recomputed here by hand
    from deepobfuscator.data.base import to_tensor_batch
    from deepobfuscator.data.splits import make_splits

    cfg, models = load_run(run)
    val = make_splits(cfg)["defender_val"]
    with torch.no_grad():
        logits = models.classifier(models.encoder(to_tensor_batch(val.images[:10])))
    labels = torch.from_numpy(val.attribute(cfg.data.task)[:10].astype("float32"))
    want = float(((logits > 0).float() == labels).float().mean())
    assert records[-1]["val_task_acc"] == pytest.approx(want, abs=1e-5)


def test_restart_refuses_a_folder_that_is_not_a_run_and_deletes_nothing(tmp_path, tiny_config):
    from deepobfuscator.cli import main

    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    (folder / "config.yaml").write_text("not: [a run")  # a config.yaml, but not ours
    with pytest.raises(RunError, match="not a run folder"):
        train(tiny_config("privacy.method=none"), folder, progress=False, restart=True)
    assert sorted(p.name for p in folder.iterdir()) == ["config.yaml", "notes.txt"]
    # the command line says the same in one line, exit status 2
    assert main(["train", "--restart", "--out", str(folder), "--quiet"]) == 2
    assert (folder / "notes.txt").read_text() == "mine"


def test_restart_deletes_only_what_training_wrote(tmp_path, tiny_config, capsys):
    cfg = tiny_config("privacy.method=none")
    run = train(cfg, tmp_path / "run", progress=False)
    paths = RunPaths(run)
    (run / "audit").mkdir()
    (run / "audit" / "report.md").write_text("an audit a user made")
    (run / "notes.txt").write_text("mine")
    (run / ".checkpoint.pt.abc.tmp").write_bytes(b"half a checkpoint")  # a killed write
    before = paths.info.stat().st_mtime_ns
    train(tiny_config("privacy.method=none", "seed=3"), run, progress=False, restart=True)
    assert (run / "notes.txt").read_text() == "mine"
    assert (run / "audit" / "report.md").is_file()
    assert not (run / ".checkpoint.pt.abc.tmp").exists()
    assert paths.info.stat().st_mtime_ns != before
    assert load_run(run)[0].seed == 3  # a new run, not a resumed one
    assert "kept what train did not write: audit, notes.txt" in capsys.readouterr().out


def test_restart_keeps_a_users_files_inside_weights_and_splits(tmp_path, tiny_config,
                                                               capsys):
    """Issue 37, item 1: restart deleted weights/ and splits/ whole, a user's files in
    them too, and did not say so. Now only the files train names go, and the kept ones
    are named; a folder with a user's own config.yaml and folders is not a run."""
    from deepobfuscator.data.splits import ROLES
    from deepobfuscator.models import build_models
    from deepobfuscator.runs import NETWORKS, SPLIT_ROLES

    assert tuple(ROLES) == SPLIT_ROLES
    cfg = tiny_config("privacy.method=none")
    assert set(build_models(cfg).named()) <= set(NETWORKS)
    run = train(cfg, tmp_path / "run", progress=False)
    (run / "weights" / "my_extra.bin").write_bytes(b"mine")
    (run / "splits" / "my_holdout.txt").write_text("mine")
    train(tiny_config("privacy.method=none", "seed=3"), run, progress=False, restart=True)
    assert (run / "weights" / "my_extra.bin").read_bytes() == b"mine"
    assert (run / "splits" / "my_holdout.txt").read_text() == "mine"
    assert load_run(run)[0].seed == 3
    assert all((run / "splits" / f"{r}.json").is_file() for r in ROLES)  # the new run's
    out = capsys.readouterr().out
    assert "splits/my_holdout.txt" in out and "weights/my_extra.bin" in out
    # a user's folder: their own (valid) config.yaml, a splits/ of their own
    mine = tmp_path / "mine"
    (mine / "splits").mkdir(parents=True)
    (mine / "splits" / "holdout.txt").write_text("mine")
    (mine / "config.yaml").write_text((run / "config.yaml").read_text())
    with pytest.raises(RunError, match="not a run folder"):
        train(cfg, mine, progress=False, restart=True)
    assert (mine / "splits" / "holdout.txt").read_text() == "mine"


def test_a_complete_run_whose_weights_were_deleted_rebuilds_them(tiny_config, tmp_path):
    """Issue 37, item 6: `train` said "already complete" while `export` said "run the same
    train command again" (a loop). Now the same command rebuilds the final weights from
    the last checkpoint, byte for byte; without a checkpoint it says what to do."""
    import hashlib
    import shutil

    from deepobfuscator.runs import RunError

    cfg = tiny_config()
    run = train(cfg, tmp_path / "run", progress=False)

    def hashes() -> dict[str, str]:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted((run / "weights").iterdir())}

    before = hashes()
    shutil.rmtree(run / "weights")
    train(cfg, run, progress=False)
    assert hashes() == before
    (run / "weights" / "encoder.safetensors").unlink()
    (run / "checkpoint.pt").unlink()
    with pytest.raises(RunError, match="final weights are missing .*encoder.*--restart"):
        train(cfg, run, progress=False)


def test_a_second_train_into_the_same_folder_stops_with_one_line(tiny_config, tmp_path):
    """Issue 37, item 6: two `train` into one folder ran together. The first holds the
    folder's lock; a second is refused before it touches anything; the lock goes with
    the run, so the next train (or a resume) proceeds."""
    from deepobfuscator.runs import RunError, RunPaths
    from deepobfuscator.training.lock import train_lock

    paths = RunPaths(tmp_path / "run")
    with train_lock(paths):  # another process's train, as far as flock is concerned
        with pytest.raises(RunError, match="another `train` is writing into .*run"):
            train(tiny_config(), paths.root, progress=False)
        assert [p.name for p in paths.root.iterdir()] == [".train.lock"]
    assert not paths.root.exists()  # it made the folder and left it empty: gone again
    run = train(tiny_config(), paths.root, progress=False)
    assert not paths.lock.exists() and (run / "run.json").is_file()
