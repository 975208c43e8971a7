"""Face detection and alignment (`data.align: mtcnn`): find the face and its five
landmarks (align.detect, MTCNN), and warp the photo by the similarity transform that puts
them where CelebA's aligned crops have them, into CelebA's 178 x 218 frame. The model's
crop and resize then follow as for a CelebA photo, so a selfie, a group photo or a tilted
photo reaches the obfuscator framed like its training data.

Torch-free (numpy, Pillow, onnxruntime): the phone client runs this module on the ONNX
graphs an export ships, training on the same graphs from the cache (align.nets), and the
page runs the same steps in JavaScript (web/align.js).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..preprocessing import ALIGN_MODES, ImageRefused
from .detect import NET_NAMES, Detector, Face

__all__ = ["ALIGN_MODES", "Aligned", "Aligner", "Face", "NoFaceFound", "aligner_for"]
# CelebA's aligned frame (width, height) and where its five landmarks sit in it: the mean
# of MTCNN's landmarks over the shared CelebA folder's aligned crops (5,986 of 6,000 had a
# face found)
# (benchmarks/align_template.py prints them)
FRAME = (178, 218)
TEMPLATE = np.array([
    [69.64, 111.80],   # left eye (image left)
    [108.69, 111.76],  # right eye
    [88.70, 136.12],   # nose tip
    [71.57, 153.08],   # mouth, left corner
    [106.41, 152.95],  # mouth, right corner
])
# outside the photo: black, in the page too (its canvas is cleared to black first)
FILL = (0, 0, 0)


class NoFaceFound(ImageRefused):
    """A photo in which the detector finds no face: never guessed at."""


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2 x 3 similarity transform (scale, rotation, shift; no reflection) that best maps
    points src (N, 2) onto dst (N, 2) in least squares (Umeyama, IEEE TPAMI 1991)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rot = u @ sign @ vt
    scale = float(np.trace(np.diag(sig) @ sign) / (s ** 2).sum(1).mean())
    out = np.zeros((2, 3))
    out[:, :2] = scale * rot
    out[:, 2] = mu_d - scale * rot @ mu_s
    return out


def warp(img: Image.Image, matrix: np.ndarray) -> Image.Image:
    """The photo seen through `matrix` (photo -> frame), as a FRAME-sized RGB image."""
    full = np.vstack([matrix, [0.0, 0.0, 1.0]])
    inv = np.linalg.inv(full)[:2]  # Pillow asks, for each output pixel, where to read
    return img.convert("RGB").transform(FRAME, Image.Transform.AFFINE, tuple(inv.ravel()),
                                        resample=Image.Resampling.BILINEAR, fillcolor=FILL)


@dataclass(frozen=True)
class Aligned:
    image: Image.Image  # FRAME-sized, the face where CelebA's aligned crops have it
    face: Face  # the face aligned (the largest), in the photo's pixels
    faces: int  # how many faces were found
    matrix: np.ndarray  # 2 x 3, photo -> frame


class Aligner:
    """Detect, pick the largest face, warp it into CelebA's aligned frame."""

    def __init__(self, graphs: Mapping[str, str | Path], threads: int = 1) -> None:
        self.detector = Detector(graphs, threads)

    def align(self, img: Image.Image, name: str = "the photo") -> Aligned:
        rgb = np.asarray(img.convert("RGB"))
        faces = self.detector.detect(rgb)
        if not faces:
            raise NoFaceFound(f"no face found in {name}: use a photo in which a face is "
                              "clearly visible (at least 20 pixels high)")
        face = faces[0]
        matrix = similarity(face.landmarks, TEMPLATE)
        return Aligned(warp(img, matrix), face, len(faces), matrix)


def aligner_for(graphs: Mapping[str, str | Path], threads: int = 1) -> Aligner:
    """One Aligner per set of graph files and process (its sessions are reused)."""
    return _cached(tuple(str(graphs[n]) for n in NET_NAMES), threads)


@functools.lru_cache(maxsize=4)
def _cached(paths: tuple[str, ...], threads: int) -> Aligner:
    return Aligner(dict(zip(NET_NAMES, paths, strict=True)), threads)


def settings() -> dict:
    """The manifest's record of the alignment (`input.alignment`): what the page needs to
    repeat it, and what the Python client checks against its own constants."""
    from . import detect

    return {"method": "mtcnn", "frame": list(FRAME), "template": TEMPLATE.tolist(),
            "fill": list(FILL), "min_face": detect.MIN_FACE,
            "pyramid_factor": detect.PYRAMID_FACTOR, "thresholds": list(detect.THRESHOLDS),
            "detect_side": detect.DETECT_SIDE,
            "graphs": {n: f"face_{n}" for n in NET_NAMES},
            "rule": "detect faces (MTCNN), take the largest, warp the photo by the "
                    "least-squares similarity transform that maps its five landmarks onto "
                    "`template`, bilinear, into a `frame` [width, height] image (outside the "
                    "photo: `fill`); then crop and resize as `crop` says"}
