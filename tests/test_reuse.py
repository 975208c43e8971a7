import json

import torch
from safetensors.torch import load_file

from deepobfuscator.runs import RunPaths
from deepobfuscator.training import train
from deepobfuscator.training.reuse import shares_task_stage, start_from_baseline


def _weights(run):
    paths = RunPaths(run)
    return {n: load_file(str(paths.weight_file(n)))
            for n in ("encoder", "classifier", "adversaries", "reconstructor")}


def test_starting_from_the_baseline_equals_training_from_scratch(tmp_path, tiny_config):
    base = train(tiny_config("privacy.method=none"), tmp_path / "base", progress=False)
    cfg = tiny_config()
    scratch = _weights(train(cfg, tmp_path / "scratch", progress=False))
    assert start_from_baseline(cfg, tmp_path / "reused", base)
    reused_run = train(cfg, tmp_path / "reused", progress=False)
    reused = _weights(reused_run)
    for net in scratch:
        assert all(torch.equal(scratch[net][k], reused[net][k]) for k in scratch[net]), net
    stages = [json.loads(x)["stage"] for x in RunPaths(reused_run).metrics.read_text()
              .splitlines()]
    assert stages[0] == "task" and "adversarial" in stages  # the history is complete
    assert not start_from_baseline(cfg, tmp_path / "reused", base)  # never over a checkpoint


def test_stage1_settings_that_differ_prevent_reuse(tiny_config):
    base = tiny_config("privacy.method=none")
    assert shares_task_stage(tiny_config("privacy.paper.lambda=3"), base)
    assert not shares_task_stage(tiny_config("train.task.epochs=2"), base)
    assert not shares_task_stage(tiny_config("model.bottleneck=4"), base)
    assert not shares_task_stage(tiny_config("privacy.dcor_weight=1"), base)
    assert not shares_task_stage(tiny_config("seed=1"), base)
