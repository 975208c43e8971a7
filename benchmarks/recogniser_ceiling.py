"""How strong are the audit's identity attackers on raw photos? The ceiling of every
re-identification and verification figure, per data protocol.

    python benchmarks/recogniser_ceiling.py [--config configs/celeba-shared.yaml] [--seed 0]
        [--threads 1] [--epochs 30]

Cuts the config's splits with the seed, trains the audit's identity embedder on the raw
attacker split (as `audit` does, up to --epochs with early stopping), and scores on the
test split's raw photos: re-identification top-1 / top-5 (one gallery photo per person,
the person's other photos as probes) and LFW-style verification (balanced same /
different pairs, ROC AUC and 10-fold accuracy). With the [recognition] extra installed,
the same figures for dlib's face-recognition ResNet (published weights, nothing trained).
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/celeba-shared.yaml")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=30)
    args = ap.parse_args()

    import numpy as np

    from deepobfuscator.attackers.base import FitSettings
    from deepobfuscator.attackers.reid import (
        IdentityEmbedder,
        dlib_available,
        dlib_embed,
        gallery_probe_split,
        reid_scores,
        verification_pairs,
        verification_scores,
    )
    from deepobfuscator.config import load_config
    from deepobfuscator.data.base import to_tensor_batch
    from deepobfuscator.data.splits import make_splits
    from deepobfuscator.precision import resolve_precision
    from deepobfuscator.threads import use_threads

    use_threads(args.threads)
    cfg = load_config(args.config, [f"seed={args.seed}"])
    roles = make_splits(cfg)
    atk, test = roles["attacker"], roles["test"]
    x_test = to_tensor_batch(test.images)
    ids = test.identities
    gallery, probes = gallery_probe_split(ids, args.seed)
    a, b, same = verification_pairs(ids, args.seed)

    def figures(emb) -> dict:
        top = reid_scores(emb[gallery], ids[gallery], emb[probes], ids[probes])[0]
        ver = verification_scores(emb[a], emb[b], same, args.seed)
        return {"top1": round(top["top1"], 4), "top5": round(top["top5"], 4),
                "chance_top1": round(top["chance_top1"], 4), "identities": top["n_identities"],
                "probes": top["n_probes"], "verification_auc": round(ver["auc"], 4),
                "verification_accuracy": round(ver["accuracy"], 4), "pairs": ver["pairs"]}

    out = {"config": args.config, "seed": args.seed, "crop": cfg.data.crop,
           "image_size": list(cfg.data.image_size), "attacker_images": len(atk),
           "test_images": len(test)}
    t0 = time.time()
    fs = FitSettings(max_epochs=args.epochs, seed=args.seed, device="cpu",
                     precision=resolve_precision("auto", __import__("torch").device("cpu")),
                     progress=False)
    emb = IdentityEmbedder(tuple(cfg.data.image_size), fs)
    emb.fit(to_tensor_batch(atk.images), atk.identities)
    out["trained_embedder"] = {**figures(emb.embed(x_test)), "seconds": round(time.time() - t0)}
    if dlib_available():
        t0 = time.time()
        out["dlib"] = {**figures(dlib_embed(x_test)), "seconds": round(time.time() - t0)}
    else:
        out["dlib"] = "not installed: pip install 'deepobfuscator[recognition]'"
    print(json.dumps(out, indent=1, default=lambda v: np.asarray(v).tolist()))


if __name__ == "__main__":
    main()
