"""Behaviour that needs minutes, not seconds: `make test-slow` runs these."""

import json

import pytest

from deepobfuscator.audit import AuditSettings, audit
from deepobfuscator.config import load_config, no_privacy_overrides
from deepobfuscator.training import train

SMALL = ["data.synth_images=1500", "model.width=0.125",  # 64 px: the default's 288 B upload
         "model.fc_hidden=64", "train.task.epochs=3", "train.adversaries.epochs=1",
         "train.adversarial.epochs=2", "threads=2"]


@pytest.mark.slow
def test_the_default_leaks_less_than_the_baseline_to_the_same_fresh_attackers(tmp_path):
    base = train(load_config("cpu", [*no_privacy_overrides(), *SMALL]), tmp_path / "base",
                 progress=False)
    run = train(load_config("cpu", SMALL), tmp_path / "default", progress=False)
    out = audit(run, base, tmp_path / "audit",
                AuditSettings(max_epochs=8, whitebox_images=4, whitebox_steps=20,
                              wire="int8", recogniser="off", progress=False, prior_images=0))
    r = json.loads((out / "audit.json").read_text())["runs"]
    obf, ref = r["obfuscated"], r["baseline"]
    assert obf["attributes"]["Male"]["balanced_accuracy"] < \
        ref["attributes"]["Male"]["balanced_accuracy"] - 0.1
    assert obf["inversion"]["msssim"]["mean"] < ref["inversion"]["msssim"]["mean"] - 0.1
    assert obf["reid"]["reconstruction_probes"]["top1"] < \
        ref["reid"]["reconstruction_probes"]["top1"]
    # and the task survives: far above its majority rate
    majority = json.loads((out / "audit.json").read_text())["chance"]["attributes"]["Smiling"]
    assert obf["utility"]["accuracy"] > majority["majority_rate"] + 0.15
