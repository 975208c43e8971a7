"""The README's main job: a no-privacy baseline and DeepObfuscator on synthfaces."""

from __future__ import annotations

import json
import time
from pathlib import Path

from .config import Config, load_config
from .training import train

QUICK_OVERRIDES = [
    "data.synth_images=1200", "train.task.epochs=1", "train.reconstructor.epochs=1",
    "train.adversaries.epochs=1", "train.adversarial.epochs=1", "train.eval_max_images=200",
]


def demo_configs(quick: bool = False) -> dict[str, Config]:
    extra = QUICK_OVERRIDES if quick else []
    return {
        "baseline": load_config("cpu", ["privacy.method=none", *extra]),
        "deepobfuscator": load_config("cpu", extra),
    }


def run_demo(out: Path, quick: bool = False) -> dict[str, Path]:
    """Train both runs into out/baseline and out/deepobfuscator; print a summary."""
    out = Path(out)
    runs = {}
    t0 = time.time()
    for name, cfg in demo_configs(quick).items():
        print(f"== {name}: training on synthfaces ==")
        runs[name] = train(cfg, out / name)
    print(f"\ndemo finished in {time.time() - t0:.0f} s")
    print(f"{'run':<16}{'task acc':>10}{'recon MS-SSIM':>15}")
    for name, run in runs.items():
        final = json.loads((run / "run.json").read_text())["final"]
        print(f"{name:<16}{final.get('val_task_acc', float('nan')):>10.3f}"
              f"{final.get('val_recon_msssim', float('nan')):>15.3f}")
    return runs
