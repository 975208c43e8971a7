"""Fresh attackers' weights, saved beside the audit (safetensors, written atomically)."""

from __future__ import annotations

from pathlib import Path

import torch

from ...io import atomic_write


def save_weights(model: torch.nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, lambda p: save_file(state, str(p)))
