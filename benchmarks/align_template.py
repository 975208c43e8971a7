"""Where MTCNN puts the five landmarks in CelebA's aligned crops: the template that
data.align warps every photo onto (deepobfuscator.align.TEMPLATE).

    python benchmarks/align_template.py [--root ../shared/data/celeba] [--images 6000]

Prints the mean landmark positions over the folder's aligned crops (178 x 218), their
spread, and how many crops had no face found.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from deepobfuscator.align.detect import Detector
from deepobfuscator.align.nets import detector_graphs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="../shared/data/celeba")
    ap.add_argument("--images", type=int, default=6000)
    args = ap.parse_args(argv)
    files = sorted((Path(args.root) / "img_align_celeba").glob("*.jpg"))[:args.images]
    if not files:
        print(f"no images under {args.root}/img_align_celeba", file=sys.stderr)
        return 2
    det = Detector(detector_graphs())
    points, missed = [], 0
    for path in tqdm(files, desc="detect", unit="img"):
        with Image.open(path) as img:
            faces = det.detect(np.asarray(img.convert("RGB")))
        if not faces:
            missed += 1
            continue
        points.append(faces[0].landmarks)
    pts = np.stack(points)
    names = ["left eye", "right eye", "nose tip", "mouth, left corner", "mouth, right corner"]
    print(f"{len(pts)} crops, {missed} without a face")
    for name, m, s in zip(names, pts.mean(0), pts.std(0), strict=True):
        print(f"    [{m[0]:.2f}, {m[1]:.2f}],  # {name} (std {s[0]:.1f}, {s[1]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
