"""The base install is the device client alone: a fresh venv with `pip install .` (no
extras) has no torch, FastAPI or onnx, classifies images through a running server exactly
as the full install does, benches an export, and answers training commands with the
extra they need."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from deploy_helpers import TOKEN, LiveServer
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def base_venv(tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("base-venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # a plain (not editable) install of this checkout, as a user's `pip install` would do,
    # from a copy without build/: setuptools adds to a build/lib left by an earlier build
    # and never removes from it, so a module moved since would come back from there
    src = tmp_path_factory.mktemp("base-src")
    for name in ("pyproject.toml", "README.md", "src"):
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        copy(ROOT / name, src / name, **({"ignore": shutil.ignore_patterns(
            "__pycache__", "*.egg-info")} if copy is shutil.copytree else {}))
    proc = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                           "-c", str(ROOT / "constraints.txt"), str(src)],
                          capture_output=True, text=True, timeout=900)
    if proc.returncode != 0 and "No matching distribution" in proc.stderr + proc.stdout:
        pytest.skip(f"the package registry is not reachable: {proc.stderr[-300:]}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return venv


def _run(venv: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "DEEPOBFUSCATOR_TOKEN": TOKEN}
    return subprocess.run([str(venv / "bin" / "deepobfuscator"), *args], capture_output=True,
                          text=True, timeout=300, env=env, cwd=kw.get("cwd"))


def test_the_base_install_has_no_trainer_and_no_server(base_venv):
    py = str(base_venv / "bin" / "python")
    for module in ("torch", "fastapi", "uvicorn", "onnx", "matplotlib"):
        proc = subprocess.run([py, "-c", f"import {module}"], capture_output=True, text=True)
        assert proc.returncode != 0, f"{module} came with the base install"


def test_the_base_install_classifies_like_the_full_one(base_venv, tiny_export, tmp_path):
    from deepobfuscator.deploy.client import classify_images
    from deepobfuscator.deploy.server import create_app

    rng = np.random.default_rng(3)
    images = []
    for i in range(3):
        p = tmp_path / f"face{i}.png"
        Image.fromarray(rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)).save(p)
        images.append(str(p))
    with LiveServer(create_app(tiny_export, token=TOKEN)) as s:
        proc = _run(base_venv, "classify", *images, "--server", s.url, "--model",
                    str(tiny_export), "--json", "--threads", "1")
        full = classify_images(s.url, tiny_export, images, token=TOKEN, threads=1)
    assert proc.returncode == 0, proc.stderr
    light = json.loads(proc.stdout)
    assert [r["label"] for r in light] == [r["label"] for r in full]
    np.testing.assert_allclose([r["probability"] for r in light],
                               [r["probability"] for r in full], atol=1e-6)


def test_the_base_install_benches_an_export(base_venv, tiny_export, tmp_path):
    out = tmp_path / "bench.json"
    proc = _run(base_venv, "bench", str(tiny_export), "--runs", "3", "--threads", "1",
                "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    res = json.loads(out.read_text())
    assert any("onnxruntime" in k and "fp32" in k for k in res["latency_ms"])


def test_training_commands_on_the_base_install_name_the_extra(base_venv, tmp_path):
    proc = _run(base_venv, "train", "--config", "cpu", "--out", str(tmp_path / "run"))
    assert proc.returncode == 2
    assert "pip install 'deepobfuscator[train]'" in proc.stderr
    assert "Traceback" not in proc.stderr
