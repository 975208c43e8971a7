"""How a photo becomes model input: the one implementation of crop and resize.

The training data path (data.base.Preprocess), the torch-free phone client
(deploy.preprocess_np) and the export's manifest all use this module, so the phone
applies exactly what the obfuscator was trained on. Only numpy and Pillow: the client
ships it without torch.

Alignment (`data.align`, deepobfuscator.align): none, or mtcnn: the face found and warped
into CelebA's aligned 178 x 218 frame before the crop (use crop square after it).

Crops (`data.crop`, recorded in preprocessing.json and the manifest):
  square       the largest centred square (aligned face crops: CelebA)
  none         the whole frame; the resize stretches it
  center:F     a centred square of side F x the shorter side, 0 < F <= 1 (LFW's face fills
               about the central 40% of its 250 x 250 photos: center:0.4)
  center:Npx   a centred square of N pixels (the shorter side when the photo is smaller)
The side is floor(F * shorter + 0.5): the same rounding in any language.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import UserError

# Decoded pixels allowed per image: a 48 MP phone photo passes; a 48 KB PNG that claims
# 20000 x 20000 (1.2 GB decoded) is refused from its header, before any decoding.
MAX_PIXELS = 50_000_000

RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "nearest": Image.Resampling.NEAREST,
}
CROP_HELP = ("use square, none, center:F (a share of the shorter side, 0 < F <= 1, e.g. "
             "center:0.4) or center:Npx (e.g. center:100px)")

# data.align: none, or mtcnn (deepobfuscator.align)
ALIGN_MODES = ("none", "mtcnn")

# what decoding does with an image it cannot read (data.on_bad_image)
OnBadImage = Literal["error", "skip"]


def parse_crop(crop: str) -> tuple[str, float]:
    """'square' | 'none' -> (crop, 0); 'center:0.4' -> ('fraction', 0.4);
    'center:100px' -> ('pixels', 100). ValueError (naming the accepted forms) otherwise."""
    if crop in ("square", "none"):
        return crop, 0.0
    kind, sep, value = str(crop).partition(":")
    if kind == "center" and sep:
        try:
            if value.endswith("px"):
                n = int(value[:-2])
                if n >= 1:
                    return "pixels", float(n)
            else:
                f = float(value)
                if 0.0 < f <= 1.0 and math.isfinite(f):
                    return "fraction", f
        except ValueError:
            pass
    raise ValueError(f"unknown crop {crop!r}: {CROP_HELP}")


def crop_box(width: int, height: int, crop: str) -> tuple[int, int, int, int] | None:
    """The (left, top, right, bottom) box `crop` cuts from a width x height photo, or None
    to keep the whole frame."""
    kind, value = parse_crop(crop)
    if kind == "none":
        return None
    short = min(width, height)
    if kind == "square":
        side = short
    elif kind == "fraction":
        side = max(1, min(short, math.floor(value * short + 0.5)))
    else:
        side = min(short, int(value))
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def eight_bit(img: Image.Image) -> Image.Image:
    """16-bit greyscale (and 32-bit integer) images as 8-bit: Pillow's convert("RGB") clips
    every value above 255, so a 16-bit gradient came out 99.6% white. Keep the high byte,
    as Pillow itself does for 16-bit colour PNGs; a 32-bit image whose values fit in 8 bits
    is taken as is."""
    if img.mode.startswith("I;16"):
        a = np.asarray(img).astype(np.uint32) >> 8
    elif img.mode == "I":
        a = np.asarray(img).astype(np.int64)
        if a.max(initial=0) > 255:
            a = a >> 8
    else:
        return img
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "L")


def has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info


def on_white(img: Image.Image) -> Image.Image:
    """RGB, a photo with transparency composited over white: each channel c with alpha a
    becomes round(c a / 255) + 255 - a, what a browser's canvas gives when the photo is
    drawn over white (the page does that), not the colour stored under a transparent
    pixel (which convert("RGB") kept and the browser drops: up to 246 levels apart)."""
    if not has_alpha(img):
        return img.convert("RGB")
    rgba = np.asarray(img.convert("RGBA"), np.int32)
    a = rgba[..., 3:]
    rgb = (rgba[..., :3] * a + 127) // 255 + 255 - a
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


class FaceAligner(Protocol):
    """What to_uint8 needs of deepobfuscator.align.Aligner (kept out of this module's
    imports: alignment needs onnxruntime, plain crops do not)."""

    def align(self, img: Image.Image, name: str = ...) -> Any: ...


def to_uint8(img: Image.Image, size: tuple[int, int] | list[int], crop: str,
             resample: str = "bilinear", aligner: FaceAligner | None = None,
             name: str = "the photo") -> np.ndarray:
    """PIL image -> uint8 (H, W, 3): RGB (transparency over white), the face aligned into
    CelebA's frame when an aligner is given (data.align), crop, resize to size =
    (height, width)."""
    img = on_white(eight_bit(img))
    if aligner is not None:
        img = aligner.align(img, name).image
    box = crop_box(*img.size, crop)
    if box is not None and box != (0, 0, *img.size):
        img = img.crop(box)
    target_h, target_w = (int(v) for v in size)
    # one axis at a time, width first, each pass rounded to uint8: a two-axis resize lets
    # Pillow choose the order of its passes (it changed between versions, moving pixels by
    # a level), so this fixes it, and the browser's JavaScript does the same
    if img.width != target_w:
        img = img.resize((target_w, img.height), RESAMPLE[resample])
    if img.height != target_h:
        img = img.resize((target_w, target_h), RESAMPLE[resample])
    return np.asarray(img, dtype=np.uint8)


class ImageRefused(UserError):
    """An image file that cannot or must not be decoded; the message names the file."""


def decode(path: str | Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open and decode one image file, checking its size from the header first."""
    path = Path(path)
    if not path.is_file():
        raise ImageRefused(f"image file not found: {path}")
    try:
        with warnings.catch_warnings():  # Pillow's warning: the size check below decides
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)  # reads the header only
    except Image.DecompressionBombError as exc:  # Pillow's own, far higher, limit
        raise ImageRefused(f"image too large: {path} ({exc})") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ImageRefused(f"corrupt or unreadable image: {path} "
                           f"({exc.__class__.__name__})") from None
    w, h = img.size
    if w * h > max_pixels:
        img.close()
        raise ImageRefused(f"image too large: {path} is {w} x {h} pixels (more than "
                           f"{max_pixels:,}); a decompression bomb or a photo to downscale first")
    try:
        img.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        img.close()
        raise ImageRefused(f"corrupt or unreadable image: {path} "
                           f"({exc.__class__.__name__})") from None
    return img
