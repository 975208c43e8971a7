"""Many photos of one person: an attacker who pools M uploads of the same person.

A user's photo library or a video sends many photos of one face; an attribute that does
not change between them (gender, roughly age) and the identity can be read from all of
them at once. For each M of the audit setting `pooled` (> 1), the test photos of each
person are cut into groups of M (seeded; the rest dropped) and
- each private attribute's probe probabilities (the strongest family's, from the
  attributes attack) are averaged in log-odds over the group; the group's label is the
  majority of its photos' (a tie: its first photo's);
- the best feature identity reader's vectors (feature_reid) are averaged over the group
  and matched against the one-photo gallery;
- the other way round, M photos of each person are the gallery (a labelled photo
  library, an account's earlier uploads) and each other photo is named by its nearest
  gallery photo (`reid_gallery`; chance: 1 / the people in its gallery).
The largest M is also stored under "largest", which the figures read.
"""

from __future__ import annotations

import numpy as np
import torch

from ...attackers.reid import gallery_probe_split, reid_scores
from ...errors import UserError
from ...metrics import balanced_accuracy
from ..figures import FigureSpec
from . import AttackContext, AuditAttack, register_attack


def counts(text: str, setting: str) -> list[int]:
    """A comma-separated list of positive integers (an audit setting), sorted, with 1."""
    try:
        values = {int(v) for v in text.split(",") if v.strip()}
    except ValueError:
        values = {0}
    if not values or min(values) < 1:
        raise UserError(f"{setting}={text!r}: give positive whole numbers separated by commas, "
                        "e.g. 1,4,16")
    return sorted(values | {1})


def person_groups(ids: np.ndarray, m: int, seed: int,
                  within: np.ndarray | None = None) -> list[np.ndarray]:
    """Groups of m indices, each of one person (from `within`, default every index)."""
    rng = np.random.default_rng(seed)
    pool = np.arange(len(ids)) if within is None else np.asarray(within)
    groups = []
    for person in np.unique(ids[pool]):
        idx = rng.permutation(pool[ids[pool] == person])
        groups += [idx[i:i + m] for i in range(0, len(idx) - m + 1, m)]
    return groups


def gallery_of(ids: np.ndarray, m: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(gallery, probes): m random photos of each person with more than m in the gallery,
    that person's other photos as probes; people with m or fewer photos are left out."""
    rng = np.random.default_rng(seed)
    gallery, probes = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for person in np.unique(ids):
        idx = rng.permutation(np.flatnonzero(ids == person))
        if len(idx) > m:
            gallery.append(idx[:m])
            probes.append(idx[m:])
    return np.sort(np.concatenate(gallery)), np.sort(np.concatenate(probes))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


@register_attack
class PooledPhotos(AuditAttack):
    name = "pooled"
    figures = (
        FigureSpec("pooled_attribute:{attr}", "{attr}: attacker pooling photos of one person "
                   "(balanced acc., most photos)", "{attr}: pooled over photos",
                   ("pooled", "largest", "attributes", "{attr}", "balanced_accuracy"), "lower",
                   0.5, per="private"),
        FigureSpec("pooled_reid_top1", "Re-identification top-1, pooling photos of one person "
                   "(most photos)", "re-identification top-1 (pooled)",
                   ("pooled", "largest", "reid", "top1"), "lower", ("reid", "top1")),
        FigureSpec("pooled_gallery_reid_top1", "Re-identification top-1, M photos of each "
                   "person known (most photos)", "re-identification top-1 (M-photo gallery)",
                   ("pooled", "largest", "reid_gallery", "top1"), "lower", ("reid", "top1")),
    )

    def applies(self, ctx: AttackContext) -> bool:
        return ctx.test.identities is not None and \
            max(counts(ctx.settings.pooled, "pooled")) > 1

    def run(self, ctx: AttackContext) -> dict:
        ids = ctx.test.identities
        assert ids is not None  # applies() said so
        seed = ctx.settings.seed
        out: dict = {}
        for m in counts(ctx.settings.pooled, "pooled")[1:]:
            entry: dict = {"photos": m, "attributes": {}}
            groups = person_groups(ids, m, seed)
            for a, probs in ctx.products.get("probes", {}).items():
                if a not in ctx.cfg.data.private or not groups:
                    continue
                y = np.asarray(ctx.test.attributes[a])
                score = np.array([_logit(probs[g]).mean() for g in groups])
                label = np.array([int(y[g].mean() > 0.5) if y[g].mean() != 0.5 else int(y[g[0]])
                                  for g in groups])
                entry["attributes"][a] = {
                    # log-odds above 0: probability above 0.5, the single photo's cut
                    "balanced_accuracy": balanced_accuracy(label, score, 0.0),
                    "groups": len(groups)}
            if "identity_vectors" in ctx.products:
                method, vec = ctx.products["identity_vectors"]
                gallery, probes = gallery_probe_split(ids, seed)
                pgroups = person_groups(ids, m, seed, within=probes)
                if pgroups:
                    pooled = torch.stack([vec[torch.from_numpy(g)].mean(0) for g in pgroups])
                    pid = np.array([ids[g[0]] for g in pgroups])
                    entry["reid"] = {**reid_scores(
                        vec[gallery], ids[gallery], pooled, pid,
                        metric="euclidean" if method == "euclidean" else "cosine")[0],
                        "reader": method}
                # the other way round: M photos of each person already known (a labelled
                # library, an account's earlier uploads), one new photo to name
                g2, p2 = gallery_of(ids, m, seed)
                if len(p2):
                    entry["reid_gallery"] = {**reid_scores(
                        vec[g2], ids[g2], vec[p2], ids[p2],
                        metric="euclidean" if method == "euclidean" else "cosine")[0],
                        "reader": method}
            out[str(m)] = entry
        if out:
            out["largest"] = out[max(out, key=int)]
        return {"pooled": out}
