"""Re-identification: can the attacker tell WHO is in a photo? An identity embedding trained
on raw photos of the attacker split's people (a cosine-margin head generalises to unseen people)
matches probes (reconstructions) to one raw photo per test person by cosine similarity."""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models.vgg import conv_bn_relu
from .base import FitResult, FitSettings, batches, fit, holdout_split, in_batches

WORK_SIZE = 48  # images are resized to this shorter side: identity survives, time stays bounded
MARGIN, SCALE = 0.25, 24.0  # CosFace: logits s * (cos - m at the true class)
# 12 epochs get most of what 30 would in ~40 s on 2 cores (48 px beats 64 px at equal time).
# An epoch cap, never a wall-clock one by default: a time cap made the recogniser weaker
# whenever the machine was busy (4 epochs, half the top-1), and the audit irreproducible.
MAX_EPOCHS = 12


class EmbeddingNet(nn.Module):
    """Strided stem, conv stages (one conv at the finest scale, two after, doubling width),
    each max-pooled, down to ~4x4 -> flatten -> linear + BN -> embedding (unnormalised)."""

    classes: torch.Tensor  # the CosFace class centres, a Parameter set by IdentityEmbedder.fit

    def __init__(self, image_size: tuple[int, int], embedding_dim: int = 128,
                 width: int = 32) -> None:
        super().__init__()
        scale = min(1.0, WORK_SIZE / min(image_size))
        self.size = (max(16, round(image_size[0] * scale)), max(16, round(image_size[1] * scale)))
        layers = [nn.Conv2d(3, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(True)]
        ch, h, w = width, self.size[0] // 2, self.size[1] // 2
        while min(h, w) >= 8:
            first = len(layers) == 3
            nxt = ch if first else min(ch * 2, width * 4)
            layers += [*conv_bn_relu(ch, nxt), *([] if first else conv_bn_relu(nxt, nxt)),
                       nn.MaxPool2d(2)]
            ch, h, w = nxt, h // 2, w // 2
        self.body = nn.Sequential(*layers)
        self.neck = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(
            ch * h * w, embedding_dim, bias=False), nn.BatchNorm1d(embedding_dim))

    @property
    def embedding_dim(self) -> int:
        """D, the embedding's length (the final BatchNorm's width)."""
        return cast(nn.BatchNorm1d, self.neck[-1]).num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, self.size, mode="bilinear", antialias=True, align_corners=False)
        return self.neck(self.body((x - 0.5).contiguous(memory_format=torch.channels_last)))

    def cosface_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Needs `self.classes`, the (identities, D) class centres, set by IdentityEmbedder.fit."""
        return cosface_loss(self.forward(x), self.classes, y)


def cosface_loss(emb: torch.Tensor, classes: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """CosFace on embeddings (N, D) against class centres (K, D): s * (cos - m at the true
    class), cross-entropy. A margin on the cosine makes the embedding generalise to people
    it never saw (their photos land near each other, not near a trained class)."""
    with torch.autocast(emb.device.type, enabled=False):  # scaled cosines need float32
        cos = F.normalize(emb.float(), dim=1) @ F.normalize(classes.float(), dim=1).T
        return F.cross_entropy(SCALE * (cos - MARGIN * F.one_hot(y, cos.shape[1])), y)


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Flip, shift/scale/rotate, brightness and contrast, and sometimes blur: the probes are
    blurry reconstructions of other photos, so the embedding should not depend on detail."""
    n, r = len(x), lambda *s: torch.rand(*s, generator=gen) - 0.5
    flip, ang, sc = torch.where(r(n) < 0, -1.0, 1.0), r(n) * 0.3, 1 + r(n) * 0.2
    cos, sin = torch.cos(ang) * sc, torch.sin(ang) * sc
    theta = torch.stack([torch.stack([cos * flip, -sin, r(n) * 0.16], 1),
                         torch.stack([sin * flip, cos, r(n) * 0.16], 1)], 1)
    x = F.grid_sample(x, F.affine_grid(theta, list(x.shape), align_corners=False),
                      padding_mode="border", align_corners=False)
    mean = x.mean((1, 2, 3), keepdim=True)
    x = (x - mean) * (1 + 0.4 * r(n, 1, 1, 1)) + mean * (1 + 0.4 * r(n, 1, 1, 1))
    blur = r(n) < -0.2  # 30%
    if blur.any():  # box down-sample by 2 or 4 and back up: a cheap blur
        small = F.avg_pool2d(x[blur], 2 if r(1).item() < 0 else 4)
        x[blur] = F.interpolate(small, x.shape[-2:], mode="bilinear", align_corners=False)
    return x.clamp(0, 1)


def _per_identity(identities: np.ndarray, seed: int, n_out) -> tuple[np.ndarray, np.ndarray]:
    """(kept, taken) indices: n_out(count) random images taken from each identity with >= 2."""
    rng, ids, taken = np.random.default_rng(seed), np.asarray(identities), [np.zeros(0, int)]
    for u in np.unique(ids):
        idx = rng.permutation(np.flatnonzero(ids == u))
        taken.append(idx[:n_out(len(idx))] if len(idx) >= 2 else idx[:0])
    taken_idx = np.sort(np.concatenate(taken).astype(np.int64))
    return np.setdiff1d(np.arange(len(ids)), taken_idx), taken_idx


class IdentityEmbedder:
    """Face-identity embedding trained on raw images of the attacker split's people."""

    def __init__(self, image_size: tuple[int, int], settings: FitSettings,
                 embedding_dim: int = 128, max_epochs: int = MAX_EPOCHS) -> None:
        # a time cap applies only when the audit asks for one (max_attack_seconds)
        self.settings = replace(settings, max_epochs=min(settings.max_epochs, max_epochs))
        self.device = torch.device(settings.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.seed)
            # torch's Module.to overloads omit memory_format, which it accepts
            self.model: EmbeddingNet = EmbeddingNet(  # type: ignore[call-overload]
                cast("tuple[int, int]", tuple(image_size)), embedding_dim).to(
                self.device, memory_format=torch.channels_last)

    def fit(self, images: torch.Tensor, identities: np.ndarray) -> FitResult:
        """Identity classification on (N, 3, H, W) images in [0, 1]; early stopping on
        held-out images of the same identities (some photos of everyone)."""
        s = self.settings
        names, y = np.unique(np.asarray(identities), return_inverse=True)
        tr, va = _per_identity(y, s.seed, lambda n: min(n - 1, max(1, round(s.val_fraction * n))))
        if len(va) == 0:  # everyone has one photo: hold out people instead
            tr, va = holdout_split(len(y), s.val_fraction, s.seed)
        labels = torch.from_numpy(y.astype(np.int64))
        gen = torch.Generator().manual_seed(s.seed)

        def loss_fn(model: nn.Module, batch: tuple) -> torch.Tensor:
            x = _augment(batch[0], gen) if model.training else batch[0]
            return cast(EmbeddingNet, model).cosface_loss(x.to(self.device),
                                                          batch[1].to(self.device))

        def train_batches(rng: np.random.Generator) -> list[tuple]:
            return [(images[tr[b]], labels[tr[b]])
                    for b in batches(len(tr), s.batch_size, rng)]

        val = [(images[va[b]], labels[va[b]]) for b in batches(len(va), 256)]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s.seed)  # class centres, and dropout masks while training
            w = torch.randn(len(names), self.model.embedding_dim)
            self.model.classes = nn.Parameter(w.to(self.device))  # saved with the weights
            return fit(self.model, loss_fn, train_batches, val, s, "reid embedder")

    @torch.no_grad()
    def embed(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """(N, D) L2-normalised float32 embeddings (image and mirror image averaged)."""
        out = in_batches(self.model, images, batch_size, self.settings.precision, self.device,
                         lambda m, x: m(x).float() + m(x.flip(-1)).float())
        return torch.cat([torch.zeros(0, self.model.embedding_dim),
                          *(F.normalize(e, dim=1) for e in out)])


def gallery_probe_split(identities: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(gallery, probes) indices: one random photo of each identity with >= 2 photos in the
    gallery, its other photos as probes; identities with a single photo are dropped."""
    ids = np.asarray(identities)
    rest, gallery = _per_identity(ids, seed, lambda n: 1)
    return gallery, rest[np.isin(ids[rest], ids[gallery])]


def reid_scores(gallery_emb, gallery_ids: np.ndarray, probe_emb, probe_ids: np.ndarray,
                chunk: int = 1024, metric: str = "cosine") -> tuple[dict, np.ndarray]:
    """Nearest-neighbour identification by cosine similarity (or, metric="euclidean", by
    distance): (summary, per-probe rank). An identity scores its best gallery photo's
    similarity; ties count as a random pick among the tied (expected top-k and rank), so
    collapsed embeddings score chance, not 0 or 1."""
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"metric={metric!r}: use 'cosine' or 'euclidean'")
    g = torch.as_tensor(gallery_emb, dtype=torch.float32).flatten(1)
    p = torch.as_tensor(probe_emb, dtype=torch.float32).flatten(1)
    if metric == "cosine":
        g, p = F.normalize(g, dim=1), F.normalize(p, dim=1)
    names, g_col = np.unique(np.asarray(gallery_ids), return_inverse=True)
    true = np.searchsorted(names, np.asarray(probe_ids)).clip(0, max(len(names) - 1, 0))
    if len(names) == 0 or np.any(names[true] != np.asarray(probe_ids)):
        raise ValueError("every probe identity needs a photo in the gallery")
    k, cols = len(names), torch.from_numpy(g_col.astype(np.int64))
    above_parts, tie_parts = [torch.zeros(0)], [torch.zeros(0)]  # (probes,) above / tied
    for i in range(0, len(p), chunk):
        sim = p[i:i + chunk] @ g.T if metric == "cosine" else -torch.cdist(p[i:i + chunk], g)
        best = torch.full((len(sim), k), -torch.inf).scatter_reduce(
            1, cols.expand(len(sim), -1), sim, "amax")  # per identity: its best photo
        t = best.gather(1, torch.from_numpy(true[i:i + chunk]).unsqueeze(1))
        above_parts.append((best > t).sum(1).double())
        tie_parts.append((best == t).sum(1).double() - 1)
    above, ties = torch.cat(above_parts).numpy(), torch.cat(tie_parts).numpy()
    ranks, mean = above + 1 + ties / 2, lambda v: float(v.mean()) if len(v) else float("nan")
    hit = lambda n: mean(np.clip((n - above) / (ties + 1), 0, 1))  # noqa: E731
    return {"top1": hit(1), "top5": hit(5), "chance_top1": 1.0 / k, "chance_top5": min(5, k) / k,
            "mean_rank": mean(ranks), "n_identities": int(k), "n_probes": int(len(p))}, ranks


def leave_one_out_top1(vectors, identities: np.ndarray, metric: str = "cosine",
                       chunk: int = 1024) -> float:
    """Each photo named by its nearest other photo (every other photo of the split is the
    gallery: an attacker who already knows many photos of each person). Ties count as a
    random pick among the tied, so identical vectors score chance, not 0 or 1."""
    x = torch.as_tensor(vectors, dtype=torch.float32).flatten(1)
    if metric == "cosine":
        x = F.normalize(x, dim=1)
    ids = torch.from_numpy(np.unique(np.asarray(identities), return_inverse=True)[1])
    hits = []
    for i in range(0, len(x), chunk):
        sim = x[i:i + chunk] @ x.T if metric == "cosine" else -torch.cdist(x[i:i + chunk], x)
        rows = torch.arange(i, min(i + chunk, len(x)))
        sim[rows - i, rows] = -torch.inf  # never itself
        tied = sim == sim.max(1, keepdim=True).values
        same = ids[rows].unsqueeze(1) == ids.unsqueeze(0)
        hits.append((tied & same).sum(1).double() / tied.sum(1).double())
    return float(torch.cat(hits).mean()) if hits else float("nan")


def leave_one_out_chance(identities: np.ndarray) -> float:
    """A random other photo's chance of showing the same person, averaged over photos."""
    _, inverse, counts = np.unique(np.asarray(identities), return_inverse=True,
                                   return_counts=True)
    n = len(inverse)
    return float(((counts[inverse] - 1) / max(n - 1, 1)).mean()) if n else float("nan")


DLIB_WEIGHTS = "dlib_face_recognition_resnet_model_v1.dat"


@lru_cache(maxsize=1)
def _dlib_model():
    """dlib's face-recognition ResNet with the CC0 weights of `face_recognition_models`.
    The weights are found without importing that package (its __init__ needs
    pkg_resources, gone from recent setuptools)."""
    import importlib.util
    from pathlib import Path

    try:
        import dlib

        spec = importlib.util.find_spec("face_recognition_models")
        if spec is None or not spec.submodule_search_locations:
            return None
        weights = Path(list(spec.submodule_search_locations)[0]) / "models" / DLIB_WEIGHTS
        return dlib.face_recognition_model_v1(str(weights)) if weights.is_file() else None
    except Exception:  # noqa: BLE001 - not installed, a broken native build, a bad file
        return None


def dlib_available() -> bool:
    """True when the optional `dlib` and `face_recognition_models` load."""
    return _dlib_model() is not None


def dlib_embed(images: torch.Tensor) -> torch.Tensor | None:
    """dlib's 128-d face descriptors (N, 128), each whole (already aligned) image used as
    the 150x150 uint8 RGB face chip; None when dlib is not installed."""
    if (model := _dlib_model()) is None:
        return None
    chips = F.interpolate(images.float(), (150, 150), mode="bilinear", antialias=True)
    chips_u8 = (chips.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).contiguous().numpy()
    out = [np.asarray(model.compute_face_descriptor(c), np.float32) for c in chips_u8]
    return torch.from_numpy(np.stack(out)) if out else torch.zeros(0, 128)


def verification_pairs(identities: np.ndarray, seed: int, max_pairs: int = 3000
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Balanced same/different-person pairs (a, b, same) in the style of LFW's verification
    protocol: every same pair is two photos of one person (as many as the data allows, up
    to max_pairs / 2), and as many different pairs, two photos of two people, drawn with
    the seed. Empty when no person has two photos."""
    ids = np.asarray(identities)
    rng = np.random.default_rng(seed)
    same = []
    for person in np.unique(ids):
        idx = np.flatnonzero(ids == person)
        same += [(i, j) for k, i in enumerate(idx) for j in idx[k + 1:]]
    if not same or len(np.unique(ids)) < 2:
        return (np.zeros(0, np.int64),) * 2 + (np.zeros(0, bool),)
    n = min(len(same), max_pairs // 2)
    same_arr = np.asarray(same, np.int64)[rng.permutation(len(same))[:n]]
    diff: list[tuple[int, int]] = []
    while len(diff) < n:
        a, b = rng.integers(0, len(ids), 2)
        if ids[a] != ids[b]:
            diff.append((a, b))
    pairs = np.concatenate([same_arr, np.asarray(diff, np.int64)])
    label = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    order = rng.permutation(len(pairs))
    return pairs[order, 0], pairs[order, 1], label[order]


def verification_scores(emb_a, emb_b, same: np.ndarray, seed: int, folds: int = 10) -> dict:
    """Cosine similarity of each pair -> ROC AUC and the LFW-style accuracy: the threshold
    chosen on 9 folds of the pairs (the best accuracy there), applied to the 10th."""
    from ..metrics import roc_auc

    a = F.normalize(torch.as_tensor(emb_a, dtype=torch.float32), dim=1)
    b = F.normalize(torch.as_tensor(emb_b, dtype=torch.float32), dim=1)
    sim = (a * b).sum(1).numpy().astype(np.float64)
    same = np.asarray(same, bool)
    fold = np.random.default_rng(seed).permutation(len(same)) % folds
    correct = 0
    for f in range(folds):
        fit, held = fold != f, fold == f
        u = np.unique(sim[fit])
        # "same if sim >= t" for t between each pair of neighbouring similarities (and past
        # both ends), the best on the fitting folds
        cand = np.r_[u[0] - 1.0, (u[1:] + u[:-1]) / 2, u[-1] + 1.0] if len(u) else np.zeros(1)
        acc = [((sim[fit] >= t) == same[fit]).mean() for t in cand]
        t = cand[int(np.argmax(acc))]
        correct += int(((sim[held] >= t) == same[held]).sum())
    return {"auc": roc_auc(same, sim), "accuracy": correct / max(1, len(same)),
            "pairs": int(len(same)), "same_pairs": int(same.sum()), "chance": 0.5}
