"""The phone's preprocessing, from the manifest alone: numpy + Pillow, no torch.

Crop and resize are `deepobfuscator.preprocessing`, the same code the training data
path runs; this module adds the manifest checks and the batch conversion (uint8 ->
float32 / 255, HWC -> CHW) that training applies; tests/test_client.py checks the
equality bit for bit. No torch here, so a client ships without the training package.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from .. import preprocessing
from ..errors import UserError
from ..preprocessing import ALIGN_MODES, RESAMPLE, FaceAligner, parse_crop

if TYPE_CHECKING:
    from ..align import Aligner


class ImageError(UserError):
    """An image file the client cannot read, or preprocessing settings it does not know."""


def check_settings(pre: dict) -> None:
    """Refuse manifest preprocessing this implementation would not reproduce exactly."""
    try:
        parse_crop(str(pre.get("crop")))
    except ValueError as exc:
        raise ImageError(f"manifest: {exc}") from None
    if pre.get("resample") not in RESAMPLE:
        raise ImageError(f"manifest resample {pre.get('resample')!r} unknown: expected one of "
                         f"{sorted(RESAMPLE)}")
    if list(pre.get("value_range", [])) != [0.0, 1.0] or pre.get("channel_order") != "RGB":
        raise ImageError("manifest asks for a value range or channel order other than "
                         "[0, 1] RGB; this client only implements that one")
    if len(pre.get("size", [])) != 2:
        raise ImageError(f"manifest input size {pre.get('size')!r} is not [height, width]")
    align = pre.get("align", "none")
    if align not in ALIGN_MODES:
        raise ImageError(f"manifest asks for face alignment {align!r}; this client knows "
                         f"{list(ALIGN_MODES)}: update the deepobfuscator package")
    if align != "none":
        from ..align import settings

        mine, theirs = settings(), pre.get("alignment")
        if not isinstance(theirs, dict) or any(theirs.get(k) != v for k, v in mine.items()
                                               if k != "rule"):
            raise ImageError("manifest's input.alignment differs from this client's face "
                             "alignment (template, frame or detector settings): export the "
                             "run again with this package version")


def to_uint8(img: Image.Image, pre: dict, aligner: FaceAligner | None = None,
             name: str = "the photo") -> np.ndarray:
    """PIL image -> uint8 (H, W, 3) per the manifest: RGB, the face aligned (when the
    manifest aligns: pass the export's aligner), crop, resize."""
    return preprocessing.to_uint8(img, pre["size"], pre["crop"], pre["resample"], aligner,
                                  name)


def to_input(images_uint8: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 3) -> float32 (N, 3, H, W) in [0, 1], the model's input."""
    x = np.ascontiguousarray(images_uint8.transpose(0, 3, 1, 2)).astype(np.float32)
    return x / np.float32(255.0)  # float32 division: the same rounding as torch's div_


def load_batch(paths: Sequence[str | Path], pre: dict, aligner: Aligner | None = None,
               faces: list[int] | None = None) -> np.ndarray:
    """Image files -> float32 (N, 3, H, W) model input, per the manifest's preprocessing.
    A manifest that aligns needs the export's aligner (DeviceObfuscator has it); `faces`,
    when given, receives how many faces each photo held (the largest is used). A photo
    with no face is an ImageError ("no face found in ..."), never a guess."""
    check_settings(pre)
    if pre.get("align", "none") != "none" and aligner is None:
        raise ImageError("this export aligns faces (input.align): open it with "
                         "DeviceObfuscator, which loads its face detector")
    out = []
    for p in paths:
        try:
            with preprocessing.decode(p) as img:
                if aligner is None:
                    out.append(to_uint8(img, pre, name=str(p)))
                    continue
                # as preprocessing.to_uint8 does in training: 8-bit RGB over white first
                aligned = aligner.align(preprocessing.on_white(preprocessing.eight_bit(img)),
                                        str(p))
                out.append(to_uint8(aligned.image, {**pre, "align": "none"}))
                if faces is not None:
                    faces.append(aligned.faces)
        except preprocessing.ImageRefused as exc:
            raise ImageError(str(exc)) from None
    if not out:
        raise ImageError("no images given")
    return to_input(np.stack(out))
