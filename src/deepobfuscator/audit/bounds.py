"""What the information cap allows any attacker, beside what the audit's attackers read.

An upload of unit RMS power with Gaussian noise carries at most C bits per image
(defences/cap.py `capacity_bits`); N uploads of the same photo with fresh noise are one
upload with the noise's variance divided by N, so at most C(N) bits. By Fano's inequality:

- identification among K people (a uniform guess: 1/K) succeeds with probability at most
  (C + 1) / log2 K;
- a binary attribute, under the balanced prior that balanced accuracy scores, is read with
  balanced accuracy at most 1 - h^-1(1 - C), h the binary entropy (the bound holds under
  any prior: the cap is a power constraint per image).

Both are vacuous (1.0) once C reaches log2 K - 1 or 1 bit: the bound then says nothing and
the audit's attackers are the only evidence. Runs without the cap and noise have no bound.
"""

from __future__ import annotations

import math

from ..config import Config


def binary_entropy_inverse(h: float) -> float:
    """The p in [0, 0.5] with binary entropy h (bisection; h in [0, 1])."""
    if h <= 0:
        return 0.0
    if h >= 1:
        return 0.5
    lo, hi = 0.0, 0.5
    for _ in range(60):
        mid = (lo + hi) / 2
        ent = -mid * math.log2(mid) - (1 - mid) * math.log2(1 - mid)
        lo, hi = (mid, hi) if ent < h else (lo, mid)
    return (lo + hi) / 2


def attribute_bound(bits: float) -> float:
    """Most balanced accuracy on a binary attribute from an upload of at most `bits`."""
    return 1.0 - binary_entropy_inverse(max(0.0, 1.0 - bits))


def identity_bound(bits: float, identities: int) -> float:
    """Most top-1 identification among `identities` people from at most `bits`."""
    if identities <= 1:
        return 1.0
    return min(1.0, (bits + 1.0) / math.log2(identities))


def upload_bits(cfg: Config, uploads: int = 1) -> float | None:
    """The cap's bound in bits per photo for `uploads` uploads of it with fresh noise (None:
    no cap or no noise, so no bound)."""
    from ..defences import feature_shape, sent_positions
    from ..defences.cap import capacity_bits

    if not cfg.privacy.normalize_features or cfg.privacy.feature_noise <= 0:
        return None
    c, h, w = feature_shape(cfg)
    return capacity_bits(c * h * w, cfg.privacy.feature_noise / math.sqrt(uploads),
                         sent_positions(cfg))


def bounds(cfg: Config, uploads: list[int], identities: int | None) -> dict | None:
    """The bounds for each number of uploads of a photo (audit.json runs.<run>.bounds)."""
    if upload_bits(cfg) is None:
        return None
    out = {}
    for n in uploads:
        bits = upload_bits(cfg, n)
        assert bits is not None
        out[str(n)] = {"bits": bits, "attribute_balanced_accuracy": attribute_bound(bits),
                       **({"reid_top1": identity_bound(bits, identities)}
                          if identities else {})}
    return out
