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

# every network a run's weights/ may hold (models.Models.named; a test keeps them equal)
NETWORKS = ("encoder", "classifier", "adversaries", "reconstructor", "critics")
# the data roles a run's splits/ holds (data.splits.ROLES; a test keeps them equal)
SPLIT_ROLES = ("defender_train", "defender_val", "attacker", "test")


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

    @property
    def audit_cache(self) -> Path:
        return self.root / "audit_cache"

    @property
    def lock(self) -> Path:
        """Held (flock) by the `train` writing here; gone when it ends (training/lock.py)."""
        return self.root / ".train.lock"

    def training_files(self) -> list[Path]:
        """What `train` writes here (and the baseline-audit cache derived from it): all
        that `train --restart` deletes. Inside weights/ and splits/ only the files train
        names (a network's .safetensors, a role's .json); anything else is the user's."""
        fixed = [self.config, self.preprocessing, self.metrics, self.checkpoint, self.info,
                 self.audit_cache, *(self.weight_file(n) for n in NETWORKS),
                 *(self.splits / f"{role}.json" for role in SPLIT_ROLES)]
        # temporaries of an atomic write interrupted by a kill (io.atomic_write)
        partial = [q for d in {f.parent for f in fixed} if d.is_dir()
                   for q in d.glob(".*.tmp")
                   if any(q.name.startswith(f".{f.name}.") for f in fixed if f.parent == d)]
        return [q for q in [*fixed, *partial] if q.exists() or q.is_symlink()]

    def _is_run(self) -> bool:
        # train's own record: a config beside run.json, a checkpoint or its preprocessing
        # record (a user's config.yaml beside folders of their own is not a run)
        if not self.config.is_file():
            return False
        if not any(p.is_file() for p in (self.info, self.checkpoint, self.preprocessing)):
            return False
        try:
            config_from_dict(yaml.safe_load(self.config.read_text()))
        except Exception:  # noqa: BLE001 - any unreadable config means "not ours"
            return False
        return True

    def clear_for_restart(self) -> list[str]:
        """Delete this run's training files so it can start over; refuses (RunError) unless
        the folder is empty or recognisably a run of this toolkit. Returns what stays
        (paths relative to the folder, a user's files inside weights/ or splits/ named)."""
        import shutil

        if not self.root.exists():
            return []
        if not self.root.is_dir():
            raise RunError(f"--restart: {self.root} is a file, not a run folder; "
                           "choose another --out")
        entries = [p for p in self.root.iterdir() if p != self.lock]
        if entries and not self._is_run():
            raise RunError(
                f"--restart: {self.root} is not a run folder of deepobfuscator (no readable "
                "config.yaml beside the files `train` writes), so nothing was deleted; "
                "choose another --out, or empty the folder yourself")
        for p in self.training_files():
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
        kept = []
        for sub in (self.weights, self.splits):
            if sub.is_dir() and not sub.is_symlink():
                if not any(sub.iterdir()):
                    sub.rmdir()  # train made it and nothing of the user's is inside
                else:
                    kept += [str(q.relative_to(self.root)) for q in sorted(sub.iterdir())]
        top = [p.name for p in self.root.iterdir()
               if p != self.lock and p not in (self.weights, self.splits)]
        return sorted([*top, *kept])


def read_run_config(run_dir: Path) -> Config:
    paths = RunPaths(Path(run_dir))
    if not paths.root.is_dir():
        raise RunError(f"run folder not found: {paths.root}")
    if not paths.config.is_file():
        raise RunError(f"{paths.root} is not a run folder (no config.yaml); "
                       "pass the --out folder of `deepobfuscator train`")
    try:
        raw = yaml.safe_load(paths.config.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise RunError(f"{paths.config} is not a readable run config ({type(exc).__name__}); "
                       "it was edited or damaged: restore it, or train the run again") from exc
    if not isinstance(raw, dict):
        raise RunError(f"{paths.config} is not a run config (not a mapping of keys); restore "
                       "it, or train the run again")
    return config_from_dict(raw)


def load_run(run_dir: Path, device: str | torch.device = "cpu") -> tuple[Config, Models]:
    """The config and final networks of a completed training run, in eval mode."""
    from safetensors.torch import load_file

    cfg = read_run_config(run_dir)
    paths = RunPaths(Path(run_dir))
    models = build_models(cfg)  # its networks: the critics too where the info term is on
    missing = [n for n in models.named() if not paths.weight_file(n).is_file()]
    if missing:
        hint = ("training has not finished; run the same train command again to resume it"
                if paths.checkpoint.is_file() else "no checkpoints either: train it first")
        raise RunError(f"{paths.root}: final weights missing for {', '.join(missing)} ({hint})")
    for name, module in models.named().items():
        path = paths.weight_file(name)
        try:
            state = load_file(str(path), device="cpu")
            module.load_state_dict(state)
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
            raise RunError(f"{path} is damaged or not this run's weights ({type(exc).__name__}); "
                           "restore the file from a copy, or train the run again into a new "
                           "folder (--out)") from exc
        module.eval()
    models.encoder.mark_finished()  # final weights hold the finish phase's fits
    return cfg, models.to(torch.device(device))


def read_info(run_dir: Path) -> dict:
    p = RunPaths(Path(run_dir)).info
    return json.loads(p.read_text()) if p.is_file() else {}
