"""Self-describing, atomic, tensors-only checkpoints.

A checkpoint holds the config it came from, library versions, where training
stands (stage, epoch, batch), every network and optimizer state, the RNG states
and the metric history. It is saved with torch.save and loaded with
weights_only=True, so loading never unpickles arbitrary objects.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..errors import RunError
from ..io import atomic_write

CHECKPOINT_FORMAT = 1


def versions() -> dict[str, str]:
    return {"deepobfuscator": __version__, "torch": str(torch.__version__),
            "numpy": str(np.__version__), "python": platform.python_version()}


def rng_state() -> dict:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, payload: dict) -> None:
    payload = {"format": CHECKPOINT_FORMAT, "versions": versions(), **payload}
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: Path) -> dict:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged file: say so instead of a deep unpickling trace
        # (torch's own message suggests weights_only=False: never, for a file we did not
        # write ourselves, so it is left out)
        raise RunError(
            f"checkpoint {path} cannot be read ({exc.__class__.__name__}): the file is damaged "
            "or not a deepobfuscator checkpoint; delete it to restart this run from the "
            "beginning"
        ) from None
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise RunError(f"checkpoint {path} has format {ckpt.get('format')}, expected "
                           f"{CHECKPOINT_FORMAT}; train into a new --out folder")
    return ckpt
