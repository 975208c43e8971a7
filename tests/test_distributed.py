"""Data-parallel training: two gloo processes on CPU, launched by torchrun as a user would."""

import json
import subprocess
import sys

import numpy as np
from conftest import TINY

from deepobfuscator.runs import RunPaths, load_run
from deepobfuscator.training.distributed import Dist, shard


def test_ranks_take_disjoint_slices_that_make_up_the_single_process_batch():
    order = np.random.default_rng(0).permutation(100)
    for world in (1, 2, 4):
        for b in range(3):
            parts = [shard(order, 16, world, r, b) for r in range(world)]
            assert all(len(p) == 16 // world for p in parts)
            assert np.array_equal(np.concatenate(parts), order[b * 16:(b + 1) * 16])


def test_single_process_helpers_are_no_ops():
    d = Dist.from_env()
    assert (d.rank, d.world, d.enabled, d.is_main) == (0, 1, False, True)
    assert d.gather_objects("x") == ["x"] and d.broadcast_object(3) == 3 and d.any(True)
    assert d.sum_counts({"sum:a": 1.0}) == {"sum:a": 1.0}
    assert d.main_first(lambda: 5) == 5


def test_two_process_gloo_training_ends_with_identical_ranks(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           "2", "-m", "deepobfuscator", "train", "--out", str(out), "--quiet", *TINY]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("done:") == 1  # only rank 0 talks
    info = json.loads(RunPaths(out).info.read_text())
    assert info["status"] == "complete"
    assert info["world_size"] == 2 and info["ranks_identical"] is True
    assert info["backend"] == "gloo"
    records = [json.loads(x) for x in RunPaths(out).metrics.read_text().splitlines()]
    # the default: the task, the continuation's two epochs, then the finish phase (the
    # sparse upload chosen on rank 0 and the cloud re-fitted on both)
    assert [r["stage"] for r in records] == ["task", "adversarial", "adversarial", "upload"]
    load_run(out)  # complete and loadable like any other run


def test_two_process_robust_training_ends_with_identical_ranks(tmp_path):
    """The robust game under torchrun: fresh attacker batches, the refresh drawn on rank 0."""
    out = tmp_path / "run"
    robust = ["privacy.method=robust", "privacy.robust.decoder_width=8",
              "privacy.robust.refresh_steps=2", "privacy.normalize_features=true",
              "privacy.feature_noise=1.0", "model.bottleneck=2"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           "2", "-m", "deepobfuscator", "train", "--out", str(out), "--quiet", *TINY, *robust]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    info = json.loads(RunPaths(out).info.read_text())
    assert info["world_size"] == 2 and info["ranks_identical"] is True
    assert info["stages"] == ["task", "adversaries", "adversarial"]
