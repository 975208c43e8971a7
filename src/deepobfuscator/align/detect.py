"""MTCNN's cascade (Zhang et al., IEEE SPL 2016) in numpy + onnxruntime, no torch: the
phone client runs it as is, and the page (web/align.js) runs the same steps in
JavaScript on the same three ONNX graphs.

Steps: an image pyramid (the photo scaled so a face of `min_face` pixels becomes P-Net's
12 x 12 window, then by 0.709 per level); P-Net proposals kept above a threshold, merged by
non-maximum suppression per level and across levels; each survivor squared, cut out,
resized to 24 x 24 for R-Net, then 48 x 48 for O-Net, which scores it, refines its box and
places five landmarks (left eye, right eye, nose, left and right mouth corners, as the
person's own left and right are seen in the photo: image left first).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

NET_NAMES = ("pnet", "rnet", "onet")
# the cascade's settings: a face at least MIN_FACE px high in the (downscaled) photo
MIN_FACE = 20
PYRAMID_FACTOR = 0.709
THRESHOLDS = (0.6, 0.7, 0.7)
# photos are downscaled so their longer side is at most this before detection: a 12 MP
# phone photo would otherwise take seconds on P-Net's pyramid; landmarks are mapped back
DETECT_SIDE = 640


@dataclass(frozen=True)
class Face:
    """One detected face in the photo's pixel coordinates."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    score: float
    landmarks: np.ndarray  # (5, 2) x, y: left eye, right eye, nose, mouth left, mouth right

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.box
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)


def _normalise(rgb: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) or (N, H, W, 3) -> float32 NCHW, (v - 127.5) / 128 as MTCNN trained."""
    x = rgb.astype(np.float32)
    x = (x - np.float32(127.5)) * np.float32(0.0078125)
    return np.ascontiguousarray(x[None] if x.ndim == 3 else x).transpose(0, 3, 1, 2).copy()


def _resize(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear, one axis at a time, width first: the order the page's resize uses (a
    two-axis Image.resize lets Pillow choose it), so both feed the networks the same
    pixels."""
    img = Image.fromarray(rgb)
    if img.width != width:
        img = img.resize((width, img.height), Image.Resampling.BILINEAR)
    if img.height != height:
        img = img.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(img)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best score first; overlap is
    intersection over union, or over the smaller box (mode='min')."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = (boxes[:, i] for i in range(4))
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        denom = np.minimum(area[i], area[rest]) if mode == "min" else area[i] + area[rest] - inter
        order = rest[inter / denom <= threshold]
    return np.asarray(keep, dtype=np.int64)


def _square(boxes: np.ndarray) -> np.ndarray:
    """Each box grown to a square around its centre (the longer side)."""
    out = boxes.copy()
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + w / 2 - side / 2
    out[:, 1] = boxes[:, 1] + h / 2 - side / 2
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def _regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    w = (boxes[:, 2] - boxes[:, 0])[:, None]
    h = (boxes[:, 3] - boxes[:, 1])[:, None]
    return boxes + offsets * np.concatenate([w, h, w, h], 1)


def _crops(rgb: np.ndarray, boxes: np.ndarray, side: int) -> np.ndarray:
    """(N, side, side, 3) uint8: each box (integer-rounded) cut from the photo, the part
    outside the photo black, resized to side x side."""
    H, W = rgb.shape[:2]
    out = np.zeros((len(boxes), side, side, 3), np.uint8)
    for k, b in enumerate(np.round(boxes).astype(np.int64)):
        x1, y1, x2, y2 = (int(v) for v in b)
        if x2 <= x1 or y2 <= y1:
            continue
        patch = np.zeros((y2 - y1, x2 - x1, 3), np.uint8)
        sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, W), min(y2, H)
        if sx2 > sx1 and sy2 > sy1:
            patch[sy1 - y1:sy2 - y1, sx1 - x1:sx2 - x1] = rgb[sy1:sy2, sx1:sx2]
        out[k] = _resize(patch, side, side)
    return out


class Detector:
    """MTCNN on onnxruntime: `detect(rgb)` -> every face found, largest first."""

    def __init__(self, graphs: Mapping[str, str | Path], threads: int = 1) -> None:
        """graphs: the paths of the pnet, rnet and onet ONNX graphs (align.nets)."""
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, threads)
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.sessions = {
            n: ort.InferenceSession(str(graphs[n]), opts, providers=["CPUExecutionProvider"])
            for n in NET_NAMES}

    def _run(self, name: str, x: np.ndarray) -> list[np.ndarray]:
        return self.sessions[name].run(None, {"image": x})

    def _proposals(self, rgb: np.ndarray) -> np.ndarray:
        """Stage 1: (N, 5) boxes x1, y1, x2, y2, score from P-Net over the pyramid."""
        H, W = rgb.shape[:2]
        scale = 12.0 / MIN_FACE
        side = min(H, W) * scale
        found = []
        while side >= 12:
            h, w = math.ceil(H * scale), math.ceil(W * scale)
            offsets, prob = self._run("pnet", _normalise(_resize(rgb, w, h)))
            p = prob[0, 1]
            ys, xs = np.nonzero(p > THRESHOLDS[0])
            if len(ys):
                # each output cell is a 12 x 12 window at stride 2 of the scaled image
                boxes = np.stack([2 * xs, 2 * ys, 2 * xs + 12, 2 * ys + 12], 1) / scale
                boxes = np.concatenate([boxes, p[ys, xs, None]], 1)
                reg = offsets[0][:, ys, xs].T
                keep = nms(boxes[:, :4], boxes[:, 4], 0.5)
                found.append(np.concatenate([boxes[keep], reg[keep]], 1))
            scale *= PYRAMID_FACTOR
            side *= PYRAMID_FACTOR
        if not found:
            return np.zeros((0, 5))
        cand = np.concatenate(found)
        cand = cand[nms(cand[:, :4], cand[:, 4], 0.7)]
        boxes = _square(_regress(cand[:, :4], cand[:, 5:9]))
        return np.concatenate([boxes, cand[:, 4:5]], 1)

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """Every face in an RGB uint8 (H, W, 3) photo, largest first."""
        H, W = rgb.shape[:2]
        shrink = min(1.0, DETECT_SIDE / max(H, W))
        small = rgb if shrink == 1.0 else _resize(rgb, max(1, round(W * shrink)),
                                                  max(1, round(H * shrink)))
        cand = self._proposals(small)
        if len(cand):  # stage 2: R-Net on 24 x 24 crops
            offsets, prob = self._run("rnet", _normalise(_crops(small, cand[:, :4], 24)))
            ok = prob[:, 1] > THRESHOLDS[1]
            cand, offsets = cand[ok], offsets[ok]
            cand[:, 4] = prob[ok, 1]
            keep = nms(cand[:, :4], cand[:, 4], 0.7)
            cand = np.concatenate([_square(_regress(cand[keep, :4], offsets[keep])),
                                   cand[keep, 4:5]], 1)
        faces: list[Face] = []
        if len(cand):  # stage 3: O-Net on 48 x 48 crops, with the landmarks
            offsets, marks, prob = self._run("onet", _normalise(_crops(small, cand[:, :4], 48)))
            ok = prob[:, 1] > THRESHOLDS[2]
            boxes, offsets, marks, score = cand[ok, :4], offsets[ok], marks[ok], prob[ok, 1]
            w = (boxes[:, 2] - boxes[:, 0])[:, None]
            h = (boxes[:, 3] - boxes[:, 1])[:, None]
            pts = np.stack([boxes[:, :1] + marks[:, :5] * w, boxes[:, 1:2] + marks[:, 5:] * h], 2)
            boxes = _regress(boxes, offsets)
            keep = nms(boxes, score, 0.7, mode="min")
            faces = [Face(tuple(float(v) / shrink for v in boxes[k]),  # type: ignore[arg-type]
                          float(score[k]), pts[k] / shrink) for k in keep]
        return sorted(faces, key=lambda f: -f.area)
