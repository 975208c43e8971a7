"""The four-stage DeepObfuscator training and its checkpoints."""

from .trainer import STAGES, resolve_device, stages_for, train

__all__ = ["STAGES", "resolve_device", "stages_for", "train"]
