"""The four-stage DeepObfuscator training and its checkpoints."""

from ..devices import resolve_device
from .trainer import STAGES, stages_for, train

__all__ = ["STAGES", "resolve_device", "stages_for", "train"]
