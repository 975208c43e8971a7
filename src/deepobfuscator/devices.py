"""`device: auto | cpu | cuda | cuda:N | mps` -> a torch device; one place for every command."""

from __future__ import annotations

import torch

from .errors import RunError


def resolve_device(name: str) -> torch.device:
    """auto: a CUDA GPU when one is visible, else Apple's MPS, else the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RunError(f"device={name!r} but no CUDA GPU is visible; use device=auto or cpu")
    return torch.device(name)
