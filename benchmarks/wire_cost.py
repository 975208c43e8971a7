"""What each wire encoding costs: task accuracy, privacy and bytes, beside a JPEG of the image.

    python benchmarks/wire_cost.py RUN_DIR [--photos DIR] [--probe] [--json OUT]

For float32, float16, int8 per-channel and int8 per-tensor (wire format version 2,
batch independent), on the run's own test split (checked against the split files
the run wrote):

- the cloud classifier's task accuracy, balanced accuracy and AUC on features after
  encode -> decode, how far its probabilities move from the float32 ones and how many
  labels flip;
- the feature error of the round trip (max and RMS, relative to the largest value);
- request bytes per image (batch 1, header included), and the mean gzip-compressed size
  (what `deepobfuscator classify` sends);
- with --probe: a fresh attribute probe (deepobfuscator.attackers.attribute_probe, the
  audit's attacker with the audit's settings) per private attribute, trained on the
  attacker split's features after the same round trip and scored on the test split's:
  what an eavesdropper on the wire can infer with each encoding; --probe-seeds 0 1 2
  repeats it with other seeds, and the spread is the noise floor of that figure.

Beside them, the image the features replace: the 64 px model input (the test split's
images) as JPEG at quality 90 and 75 and as raw uint8; with --photos DIR, real photos
(e.g. CelebA's 218 x 178 aligned crops) as stored, re-encoded at q90/q75, and their
preprocessed model input as JPEG. Features come from the run's PyTorch obfuscator in
float32 (the ONNX export matches it to ~1e-5; see the export's parity figures).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deepobfuscator import wire
from deepobfuscator.data.base import Preprocess, to_tensor_batch
from deepobfuscator.data.splits import check_splits_match, make_splits
from deepobfuscator.deploy.client import gzip_body
from deepobfuscator.metrics import accuracy, balanced_accuracy, roc_auc
from deepobfuscator.runs import RunPaths, load_run

ENCODINGS = {  # name -> (wire dtype, per_channel)
    "float32": ("float32", True),
    "float16": ("float16", True),
    "int8 per-channel": ("int8", True),
    "int8 per-tensor": ("int8", False),
}


@torch.no_grad()
def features(encoder: torch.nn.Module, images: np.ndarray, batch: int = 256) -> np.ndarray:
    out = [np.ascontiguousarray(encoder(to_tensor_batch(images[i:i + batch])).float().numpy())
           for i in range(0, len(images), batch)]
    return np.concatenate(out)


@torch.no_grad()
def task_probs(classifier: torch.nn.Module, z: np.ndarray, batch: int = 256) -> np.ndarray:
    out = [torch.sigmoid(classifier(torch.from_numpy(z[i:i + batch]))).float().numpy()
           for i in range(0, len(z), batch)]
    return np.concatenate(out).astype(np.float64)


def round_trip(z: np.ndarray, dtype: str, per_channel: bool, batch: int = 256) -> np.ndarray:
    """encode -> decode. Version 2 quantizes each image on its own, so batching here gives
    the same values as sending one image per request (tests/test_wire.py checks it)."""
    return np.concatenate([wire.decode(wire.encode(z[i:i + batch], dtype, per_channel))
                           for i in range(0, len(z), batch)])


def jpeg_bytes(img: Image.Image, quality: int) -> int:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.tell()


def image_sizes(images_uint8: np.ndarray) -> dict:
    """Mean bytes of each (H, W, 3) image as JPEG q90 / q75, and raw."""
    q90 = [jpeg_bytes(Image.fromarray(a), 90) for a in images_uint8]
    q75 = [jpeg_bytes(Image.fromarray(a), 75) for a in images_uint8]
    return {"images": len(images_uint8), "size_hw": list(images_uint8.shape[1:3]),
            "raw_uint8": int(images_uint8[0].size), "jpeg_q90_mean": round(float(np.mean(q90))),
            "jpeg_q90_median": round(float(np.median(q90))),
            "jpeg_q75_mean": round(float(np.mean(q75))),
            "jpeg_q75_median": round(float(np.median(q75)))}


def photo_sizes(folder: Path, pre: Preprocess, limit: int) -> dict:
    paths = sorted(p for p in folder.iterdir()
                   if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:limit]
    if not paths:
        raise SystemExit(f"no .jpg/.png photos in {folder}")
    originals, inputs, stored = [], [], []
    for p in paths:
        with Image.open(p) as im:
            rgb = im.convert("RGB")
        originals.append(np.asarray(rgb))
        inputs.append(pre.apply(rgb))
        stored.append(p.stat().st_size)
    shapes = {a.shape for a in originals}
    orig = (image_sizes(np.stack(originals)) if len(shapes) == 1 else
            {"images": len(originals), "note": f"mixed sizes {sorted(shapes)[:3]}"})
    return {"folder": str(folder), "original": {**orig, "file_bytes_mean":
                                                round(float(np.mean(stored)))},
            "model_input": image_sizes(np.stack(inputs))}


def probe_attributes(z_atk: np.ndarray, z_test: np.ndarray, roles: dict, private: list[str],
                     max_epochs: int, seeds: list[int]) -> dict:
    """The audit's fresh attribute probe on features after the round trip, once per seed
    (the seed sets the probe's initialisation, its held-out share and its batches): the
    spread over seeds is the noise floor any difference between encodings must beat."""
    per_seed = [_probe_once(z_atk, z_test, roles, private, max_epochs, s) for s in seeds]
    out = {}
    for a in private:
        runs = [r[a] for r in per_seed]
        out[a] = {"seeds": seeds, "runs": runs}
        for k in ("balanced_accuracy", "auc"):
            v = [r[k] for r in runs]
            out[a][k] = round(float(np.mean(v)), 4)
            out[a][f"{k}_range"] = [min(v), max(v)]
    return out


def _probe_once(z_atk: np.ndarray, z_test: np.ndarray, roles: dict, private: list[str],
                max_epochs: int, seed: int) -> dict:
    from deepobfuscator.attackers.attribute_probe import AttributeProbe, score_attribute
    from deepobfuscator.attackers.base import FeatureSet, FitSettings
    from deepobfuscator.precision import resolve_precision

    precision = resolve_precision("auto", torch.device("cpu"))
    fs = FitSettings(max_epochs=max_epochs, patience=4, lr=1e-3, seed=seed, device="cpu",
                     precision=precision, progress=False)
    atk, test = roles["attacker"], roles["test"]
    data = FeatureSet(torch.from_numpy(z_atk), torch.zeros(len(z_atk), 1),
                      {a: atk.attribute(a) for a in private},
                      atk.identities.copy() if atk.has_identities else None)
    out = {}
    for a in private:
        t0 = time.perf_counter()
        probe = AttributeProbe(tuple(z_atk.shape[1:]), fs)
        curve = probe.fit(data, a)
        s = score_attribute(test.attribute(a), probe.infer(torch.from_numpy(z_test)))
        out[a] = {"balanced_accuracy": round(s["balanced_accuracy"], 4),
                  "auc": round(s["roc_auc"], 4), "accuracy": round(s["accuracy"], 4),
                  "majority_rate": round(s["majority_rate"], 4), "epochs": len(curve.val_loss),
                  "stopped": curve.stopped, "seconds": round(time.perf_counter() - t0, 1),
                  "precision": precision}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", type=Path, help="a finished run folder")
    p.add_argument("--photos", type=Path, help="folder of real photos for the JPEG sizes")
    p.add_argument("--photo-limit", type=int, default=200)
    p.add_argument("--probe", action="store_true", help="also train fresh attribute probes")
    p.add_argument("--probe-epochs", type=int, default=30, help="the audit's default: 30")
    p.add_argument("--probe-seeds", type=int, nargs="+", default=[0],
                   help="one probe per seed per encoding (default: 0, the audit's seed)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.time()

    cfg, models = load_run(args.run)
    roles = make_splits(cfg)
    check_splits_match(roles, RunPaths(args.run).splits)
    test = roles["test"]
    task = cfg.data.task
    y = test.attribute(task)
    z = features(models.encoder, test.images)
    p_raw = task_probs(models.classifier, z)
    z_atk = features(models.encoder, roles["attacker"].images) if args.probe else None

    res: dict = {"run": str(args.run), "privacy_method": cfg.privacy.method, "task": task,
                 "test_images": len(test), "feature_shape": list(z.shape[1:]),
                 "feature_zero_fraction": round(float((z == 0).mean()), 4), "encodings": {}}
    for name, (dtype, per_channel) in ENCODINGS.items():
        zt = round_trip(z, dtype, per_channel)
        pt = task_probs(models.classifier, zt)
        err = np.abs(zt.astype(np.float64) - z)
        top = float(np.abs(z).max())
        gz = [len(gzip_body(wire.encode(z[i:i + 1], dtype, per_channel)))
              for i in range(len(z))]
        row = {
            "bytes_per_image": len(wire.encode(z[:1], dtype, per_channel)),
            "gzip_bytes_per_image_mean": round(float(np.mean(gz))),
            "gzip_bytes_per_image_range": [min(gz), max(gz)],
            "task_accuracy": round(accuracy(y, pt, 0.5), 4),
            "task_balanced_accuracy": round(balanced_accuracy(y, pt, 0.5), 4),
            "task_auc": round(roc_auc(y, pt), 4),
            "probability_max_abs_change": float(f"{np.abs(pt - p_raw).max():.3g}"),
            "probability_mean_abs_change": float(f"{np.abs(pt - p_raw).mean():.3g}"),
            "labels_flipped": int(((pt >= 0.5) != (p_raw >= 0.5)).sum()),
            "feature_max_abs_error_rel": float(f"{err.max() / top:.3g}"),
            "feature_rms_error_rel": float(f"{np.sqrt((err ** 2).mean()) / top:.3g}"),
        }
        if args.probe:
            print(f"probing {name} ...", file=sys.stderr)
            z_atk_t = round_trip(z_atk, dtype, per_channel)
            row["probe"] = probe_attributes(z_atk_t, zt, roles, list(cfg.data.private),
                                            args.probe_epochs, args.probe_seeds)
        res["encodings"][name] = row
    res["input_images"] = {"source": f"test split ({test.source})", **image_sizes(test.images)}
    if args.photos:
        pre = Preprocess(size=tuple(cfg.data.image_size), crop=cfg.data.crop)
        res["photos"] = photo_sizes(args.photos, pre, args.photo_limit)
    res["seconds"] = round(time.time() - t_start, 1)
    print(format_report(res))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0


def format_report(res: dict) -> str:
    priv = sorted({a for r in res["encodings"].values() for a in r.get("probe", {})})
    head = (f"{'encoding':<18}{'bytes/img':>10}{'gzip':>7}{'task acc':>10}{'bal acc':>9}{'AUC':>8}"
            f"{'max dP':>10}{'flips':>7}{'feat err':>10}"
            + "".join(f"{'probe ' + a + ' bal acc / AUC':>36}" for a in priv))
    lines = [f"run {res['run']} ({res['privacy_method']}), task {res['task']}, "
             f"{res['test_images']} test images, features {res['feature_shape']} "
             f"({res['feature_zero_fraction']:.0%} zeros)", head]
    for name, r in res["encodings"].items():
        line = (f"{name:<18}{r['bytes_per_image']:>10}{r['gzip_bytes_per_image_mean']:>7}"
                f"{r['task_accuracy']:>10.4f}"
                f"{r['task_balanced_accuracy']:>9.4f}{r['task_auc']:>8.4f}"
                f"{r['probability_max_abs_change']:>10.2g}{r['labels_flipped']:>7}"
                f"{r['feature_max_abs_error_rel']:>10.2g}")
        for a in priv:
            pr = r["probe"][a]
            (b0, b1), (u0, u1) = pr["balanced_accuracy_range"], pr["auc_range"]
            line += (f"  {pr['balanced_accuracy']:.3f} [{b0:.3f}-{b1:.3f}] / "
                     f"{pr['auc']:.3f} [{u0:.3f}-{u1:.3f}]")
        lines.append(line)
    im = res["input_images"]
    lines.append(f"model input {im['size_hw'][0]}x{im['size_hw'][1]} ({im['source']}, "
                 f"{im['images']} images): raw {im['raw_uint8']} B, JPEG q90 mean "
                 f"{im['jpeg_q90_mean']} B (median {im['jpeg_q90_median']}), q75 mean "
                 f"{im['jpeg_q75_mean']} B (median {im['jpeg_q75_median']})")
    if "photos" in res:
        ph = res["photos"]
        for key, label in (("original", "original photos"), ("model_input", "their input")):
            s = ph[key]
            if "jpeg_q90_mean" not in s:
                lines.append(f"{label}: {s}")
                continue
            extra = (f", stored files mean {s['file_bytes_mean']} B"
                     if "file_bytes_mean" in s else "")
            lines.append(f"{label} {s['size_hw'][0]}x{s['size_hw'][1]} ({s['images']} from "
                         f"{ph['folder']}): raw {s['raw_uint8']} B{extra}, JPEG q90 mean "
                         f"{s['jpeg_q90_mean']} B, q75 mean {s['jpeg_q75_mean']} B")
    if priv:
        seeds = next(iter(res["encodings"].values()))["probe"][priv[0]]["seeds"]
        lines.append(f"probe: mean [min-max] over seeds {seeds}, trained on the attacker "
                     "split's features after the same round trip, scored on the test split")
    lines.append(f"({res['seconds']} s)")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
