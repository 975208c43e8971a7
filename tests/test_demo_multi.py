"""`deepobfuscator demo --tasks multi`: one upload answers two questions, trained, audited
per task and exported; the served export answers both for a photo."""

from __future__ import annotations

import json

import pytest
from deploy_helpers import TOKEN, LiveServer
from PIL import Image

from deepobfuscator.cli import main
from deepobfuscator.data.synthfaces import generate_synthfaces
from deepobfuscator.demo import DEMO_MULTI_TASK, demo_configs, run_demo
from deepobfuscator.deploy.client import classify_images
from deepobfuscator.deploy.server import create_app

TASKS = ["Smiling", "Mouth_Slightly_Open"]


def test_the_multi_task_demo_configs_are_the_multitask_preset_at_the_demos_sizes():
    one, multi = demo_configs(quick=True), demo_configs(quick=True, tasks="multi")
    for name in ("baseline", "obfuscated"):
        assert multi[name].data.task == TASKS
        # the quick preset's sizes, not its base's defences
        assert multi[name].data.image_size == one[name].data.image_size
        assert multi[name].data.synth_images == one[name].data.synth_images
    # the multitask preset's phone: every number sent, the cap at noise 2
    obf = multi["obfuscated"]
    assert obf.model.upload_positions == 0 and obf.privacy.feature_noise == 2.0
    assert obf.train.balance_tasks and obf.model.dropout == 0
    assert multi["baseline"].privacy.method == "none"
    assert "model.dropout=0" in DEMO_MULTI_TASK


def test_the_multi_task_demo_audits_and_serves_both_answers(tmp_path):
    out = tmp_path / "demo"
    audit_dir = run_demo(out, quick=True, progress=False, tasks="multi")
    res = json.loads((audit_dir / "audit.json").read_text())
    for run in ("baseline", "obfuscated"):
        assert list(res["runs"][run]["utility"]["tasks"]) == TASKS
    manifest = json.loads((out / "export" / "manifest.json").read_text())
    assert [t["name"] for t in manifest["tasks"]] == TASKS
    face = generate_synthfaces(1, 1, (64, 64), seed=3).images[0]
    Image.fromarray(face).save(tmp_path / "face.png")
    with LiveServer(create_app(out / "export", token=TOKEN)) as server:
        answer = classify_images(server.url, out / "export", [tmp_path / "face.png"],
                                 token=TOKEN)[0]
    assert list(answer["answers"]) == TASKS
    for name in TASKS:
        assert 0.0 <= answer["answers"][name]["probability"] <= 1.0


def test_the_demo_command_refuses_an_unknown_task_choice(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--tasks", "three", "--quick"])
    assert exc.value.code == 2
    assert "invalid choice: 'three'" in capsys.readouterr().err
