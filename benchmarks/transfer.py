"""Does an export answer photos framed unlike its training data? (issue 36, item 4)

    python benchmarks/transfer.py --export celeba=EXPORT_A --export lfw=EXPORT_B \
        --data configs/lfw-shared.yaml [--seed 0] [--frames own center:0.4 aligned] \
        [--out results.json]

For each export and each framing of the photos, the deployed path end to end: the data
config's test photos (identity-disjoint from its attacker and defender splits at --seed),
framed as asked, then the export's obfuscator with its device noise, the int8 wire, the
export's classifier. Prints the task's AUC and balanced accuracy per export and framing.

Framings: `own` (the export's own preprocessing, alignment included), a crop
(`center:0.4`, `square`, ...: the whole photo cropped and resized), `aligned` (the face
found by MTCNN and warped into CelebA's aligned frame, then the square crop). Photos in
which no face is found are counted and left out of every framing, so all framings score
the same photos.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from deepobfuscator import preprocessing, wire
from deepobfuscator.align import NoFaceFound, aligner_for
from deepobfuscator.align.nets import detector_graphs
from deepobfuscator.config import load_config
from deepobfuscator.data.splits import make_splits
from deepobfuscator.deploy.client import DeviceObfuscator
from deepobfuscator.deploy.preprocess_np import to_input
from deepobfuscator.deploy.sessions import open_checked
from deepobfuscator.metrics import task_scores


def _frame(img: Image.Image, pre: dict, framing: str, aligned: Image.Image | None) -> np.ndarray:
    size, resample = pre["size"], pre["resample"]
    if framing == "own":  # as the device would: aligned first where the export aligns
        src = aligned if pre.get("align", "none") != "none" else img
        assert src is not None
        return preprocessing.to_uint8(src, size, pre["crop"], resample)
    if framing == "aligned":
        assert aligned is not None
        return preprocessing.to_uint8(aligned, size, "square", resample)
    return preprocessing.to_uint8(img, size, framing, resample)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--export", action="append", required=True, metavar="NAME=DIR")
    ap.add_argument("--data", required=True, help="a config whose test split holds the photos")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--frames", nargs="+", default=["own", "aligned"])
    ap.add_argument("--max-images", type=int, default=0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    exports = dict(e.split("=", 1) for e in args.export)
    cfg = load_config(args.data, [f"seed={args.seed}"])
    test = make_splits(cfg)["test"]
    root = Path(cfg.data.test.root if cfg.data.test is not None else cfg.data.root)
    task = str(cfg.data.task)
    files = [f for f in test.files if (root / f).is_file()] or list(test.files)
    labels = test.attribute(task)
    if args.max_images:
        files, labels = files[:args.max_images], labels[:args.max_images]
    aligner = aligner_for(detector_graphs())
    photos, frames, kept = [], [], []
    t0 = time.perf_counter()
    for i, f in enumerate(tqdm(files, desc="align", unit="img")):
        path = _photo_path(root, f)
        with preprocessing.decode(path) as raw:
            img = preprocessing.on_white(preprocessing.eight_bit(raw))
        try:
            frames.append(aligner.align(img, str(path)).image)
        except NoFaceFound:
            continue
        photos.append(img)
        kept.append(i)
    align_ms = 1000 * (time.perf_counter() - t0) / max(1, len(files))
    y = labels[kept]
    print(f"{task} on {len(kept)} test photos of {args.data} (seed {args.seed}); no face found "
          f"in {len(files) - len(kept)}; decode + detect + align {align_ms:.1f} ms per photo")
    table: dict = {"task": task, "data": args.data, "seed": args.seed, "photos": len(kept),
                   "no_face": len(files) - len(kept), "align_ms_per_photo": round(align_ms, 1),
                   "results": {}}
    for name, folder in exports.items():
        device = DeviceObfuscator(folder, threads=1)
        cls = open_checked(device.bundle, "classifier", 1)
        pre = device.bundle.preprocessing
        for framing in args.frames:
            probs = []
            for start in range(0, len(photos), 64):
                batch = np.stack([_frame(img, pre, framing, al) for img, al in
                                  zip(photos[start:start + 64], frames[start:start + 64],
                                      strict=True)])
                z = device.features(to_input(batch))
                back = wire.decode(device.encode(z, "int8"))
                probs.append(cls.run(None, {"features": back.astype(np.float32)})[0])
            p = np.concatenate(probs).reshape(len(photos), -1)[:, 0]
            s = task_scores(y, p)
            table["results"][f"{name}/{framing}"] = {k: round(float(v), 4) for k, v in s.items()}
            print(f"  {name:>10} {framing:>12}: AUC {s['auc']:.3f}  balanced accuracy "
                  f"{s['balanced_accuracy']:.3f}")
    if args.out:
        args.out.write_text(json.dumps(table, indent=2) + "\n")
    return 0


def _photo_path(root: Path, name: str) -> Path:
    for cand in (root / name, root / "lfw" / name, root / "img_align_celeba" / name):
        if cand.is_file():
            return cand
    raise SystemExit(f"photo {name} not found under {root}")


if __name__ == "__main__":
    sys.exit(main())
