"""Identity attacks on the inverse network's reconstructions: re-identification against a
gallery of raw test photos, and LFW-style verification of photo / reconstruction pairs;
by the audit's trained embedder and, when installed, dlib's published recogniser."""

from __future__ import annotations

import hashlib

import torch

from ...attackers.reid import (
    dlib_available,
    dlib_embed,
    gallery_probe_split,
    reid_scores,
    verification_pairs,
    verification_scores,
)
from ..figures import FigureSpec
from . import AttackContext, AuditAttack, register_attack

_TOP1 = ("reid", "top1")


@register_attack
class Reidentification(AuditAttack):
    name = "reid"
    needs = ("reconstructions",)
    figures = (
        FigureSpec("reid_top1", "Re-identification top-1 (from reconstructions)",
                   "re-identification top-1", ("reid", "reconstruction_probes", "top1"),
                   "lower", _TOP1, headline=True),
        FigureSpec("reid_top5", "Re-identification top-5 (from reconstructions)",
                   "re-identification top-5", ("reid", "reconstruction_probes", "top5"),
                   "lower", ("reid", "top5")),
        FigureSpec("verification_auc", "Face verification AUC (photo vs reconstruction)",
                   "verification AUC", ("reid", "verification", "reconstruction", "auc"),
                   "lower", 0.5, headline=True),
        FigureSpec("dlib_reid_top1",
                   "Re-identification top-1 (dlib recogniser, from reconstructions)",
                   "re-identification top-1 (dlib)",
                   ("reid", "dlib_reconstruction_probes", "top1"), "lower", _TOP1,
                   optional=True),
        FigureSpec("dlib_verification_auc", "Face verification AUC (dlib recogniser)",
                   "verification AUC (dlib)",
                   ("reid", "dlib_verification", "reconstruction", "auc"), "lower", 0.5,
                   optional=True),
    )

    def applies(self, ctx: AttackContext) -> bool:
        return ctx.embedder is not None and ctx.test.identities is not None

    def run(self, ctx: AttackContext) -> dict:
        out, ranks = reidentify(ctx.embedder, ctx.test.images, ctx.test.identities,
                                ctx.products["reconstructions"], ctx.settings.seed,
                                ctx.settings.recogniser)
        ctx.arrays["reid_ranks"] = ranks
        reads = ctx.products.setdefault("identity_reads", {})
        reads["reconstructions"] = out["reconstruction_probes"]["top1"]
        if "dlib_reconstruction_probes" in out:
            reads["reconstructions (dlib)"] = out["dlib_reconstruction_probes"]["top1"]
        # the same recogniser on the raw photos: what any identity attack could reach
        ctx.products["identity_ceiling"] = max(
            out["raw_probes"]["top1"], out.get("dlib_raw_probes", {}).get("top1", 0.0))
        return {"reid": out}


def reidentify(embedder, images: torch.Tensor, ids, recon: torch.Tensor, seed: int,
               recogniser: str = "auto"):
    """The identity figures of one run's reconstructions of the test photos."""
    gallery, probes = gallery_probe_split(ids, seed)
    g_emb = embedder.embed(images[gallery])
    out = {}
    summary, ranks = reid_scores(g_emb, ids[gallery], embedder.embed(recon[probes]),
                                 ids[probes])
    out["reconstruction_probes"] = summary
    out["raw_probes"] = reid_scores(g_emb, ids[gallery], embedder.embed(images[probes]),
                                    ids[probes])[0]
    # LFW-style verification: is this reconstruction the person in that photo?
    a, b, same = verification_pairs(ids, seed)
    if len(same):
        e_raw, e_rec = embedder.embed(images), embedder.embed(recon)
        out["verification"] = {
            "raw": verification_scores(e_raw[a], e_raw[b], same, seed),
            "reconstruction": verification_scores(e_raw[a], e_rec[b], same, seed)}
    if recogniser == "auto" and dlib_available():  # published weights: a strong ceiling
        d_raw, d_rec = _dlib_raw(images), dlib_embed(recon)
        assert d_rec is not None  # dlib_available() said so
        out["dlib_raw_probes"] = reid_scores(d_raw[gallery], ids[gallery], d_raw[probes],
                                             ids[probes])[0]
        out["dlib_reconstruction_probes"] = reid_scores(d_raw[gallery], ids[gallery],
                                                        d_rec[probes], ids[probes])[0]
        if len(same):
            out["dlib_verification"] = {
                "raw": verification_scores(d_raw[a], d_raw[b], same, seed),
                "reconstruction": verification_scores(d_raw[a], d_rec[b], same, seed)}
    return out, ranks


_DLIB_RAW: dict[str, torch.Tensor] = {}


def _dlib_raw(images: torch.Tensor) -> torch.Tensor:
    """dlib descriptors of the raw test photos, computed once per audit (the baseline and
    the obfuscated run share their test photos)."""
    key = hashlib.sha1(images.numpy().tobytes()).hexdigest()
    if key not in _DLIB_RAW:
        _DLIB_RAW.clear()
        emb = dlib_embed(images)
        assert emb is not None  # only called when dlib_available()
        _DLIB_RAW[key] = emb
    return _DLIB_RAW[key]
