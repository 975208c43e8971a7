"""The audit's identity figure: the strongest of its identity attacks.

Each identity attack scored on every test probe leaves its re-identification top-1 in
ctx.products["identity_reads"] (from the features; from the inverse network's
reconstructions, by the trained recogniser and by dlib's when installed); the headline is
the maximum, named, beside the raw-photo ceiling (the same recogniser on the photos).
Attacks scored on a subset of the probes (the prior-guided inversion's first
`prior_images`) are listed beside it with their number of probes, not maximised over: on
a few dozen probes sampling error alone would decide the maximum.
"""

from __future__ import annotations

from ..figures import FigureSpec
from . import AttackContext, AuditAttack, register_attack


@register_attack
class StrongestIdentity(AuditAttack):
    name = "identity"
    repeatable = True
    figures = (
        FigureSpec("identity_top1", "Identity: re-identification top-1, strongest attack",
                   "identity top-1 (strongest attack)", ("identity", "top1"), "lower",
                   ("reid", "top1"), headline=True),
    )

    def applies(self, ctx: AttackContext) -> bool:
        return bool(ctx.products.get("identity_reads"))

    def run(self, ctx: AttackContext) -> dict:
        reads = dict(ctx.products["identity_reads"])
        best = max(reads, key=lambda k: reads[k])
        ceiling = ctx.products.get("identity_ceiling")
        subset = ctx.products.get("identity_reads_subset")
        return {"identity": {"top1": reads[best], "attack": best, "reads": reads,
                             **({"raw_photo_ceiling": ceiling} if ceiling is not None else {}),
                             **({"subset_reads": subset} if subset else {})}}
