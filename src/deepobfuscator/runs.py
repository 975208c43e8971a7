"""The run folder: one place that knows its layout, and loading a finished run.

    RUN/config.yaml          resolved config (what produced this run)
    RUN/preprocessing.json   crop, resize, value range: what the phone must apply
    RUN/splits/<role>.json   file names of each data role
    RUN/metrics.jsonl        one line per (stage, epoch): losses and validation figures
    RUN/checkpoint.pt        last training state (resumable; tensors only)
    RUN/weights/<net>.safetensors   final weights, written when training completes
    RUN/run.json             status, feature shape, versions, timings
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from .config import Config, config_from_dict
from .errors import RunError
from .models import Models, build_models

NETWORKS = ("encoder", "classifier", "adversaries", "reconstructor")




@dataclass(frozen=True)
class RunPaths:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def preprocessing(self) -> Path:
        return self.root / "preprocessing.json"

    @property
    def splits(self) -> Path:
        return self.root / "splits"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint.pt"

    @property
    def weights(self) -> Path:
        return self.root / "weights"

    @property
    def info(self) -> Path:
        return self.root / "run.json"

    def weight_file(self, network: str) -> Path:
        return self.weights / f"{network}.safetensors"


def read_run_config(run_dir: Path) -> Config:
    paths = RunPaths(Path(run_dir))
    if not paths.root.is_dir():
        raise RunError(f"run folder not found: {paths.root}")
    if not paths.config.is_file():
        raise RunError(f"{paths.root} is not a run folder (no config.yaml); "
                       "pass the --out folder of `deepobfuscator train`")
    return config_from_dict(yaml.safe_load(paths.config.read_text()))


def load_run(run_dir: Path, device: str | torch.device = "cpu") -> tuple[Config, Models]:
    """The config and final networks of a completed training run, in eval mode."""
    from safetensors.torch import load_file

    cfg = read_run_config(run_dir)
    paths = RunPaths(Path(run_dir))
    missing = [n for n in NETWORKS if not paths.weight_file(n).is_file()]
    if missing:
        hint = ("training has not finished; run the same train command again to resume it"
                if paths.checkpoint.is_file() else "no checkpoints either: train it first")
        raise RunError(f"{paths.root}: final weights missing for {', '.join(missing)} ({hint})")
    models = build_models(cfg)
    for name, module in models.named().items():
        module.load_state_dict(load_file(str(paths.weight_file(name)), device="cpu"))
        module.eval()
    return cfg, models.to(torch.device(device))


def read_info(run_dir: Path) -> dict:
    p = RunPaths(Path(run_dir)).info
    return json.loads(p.read_text()) if p.is_file() else {}
