"""synthfaces: procedurally drawn faces with CelebA-style labels, no files or network needed.

Each identity has stable traits (face shape, skin, hair, eyes, brows, nose, Male, Young,
mostly Eyeglasses); each image adds an expression (Smiling, mouth open) and nuisance (pose
shift/scale/rotation, background, lighting, noise). Gender and age are entangled with
appearance the way they are in photos (hair length, brows, jaw, beard, lipstick, grey hair,
wrinkles), probabilistically, so private attributes leak through pixels like in CelebA.

Rendering is vectorised over chunks of images: every shape is a signed distance in
face-normalised coordinates turned into ~1 px anti-aliased coverage, so any (h, w) works.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .base import NO_PARTITION, DataError, FaceDataset
from .cache import cached_dataset
from .factory import SourceRequest, register_source

GENERATOR_VERSION = "synthfaces-1"  # bump whenever the pixels or labels for a seed change
ATTRIBUTES = [
    "Smiling", "Male", "Young", "Eyeglasses", "Blond_Hair", "Black_Hair", "Brown_Hair",
    "Gray_Hair", "Bangs", "Bald", "Mouth_Slightly_Open", "Wearing_Lipstick", "No_Beard",
    "Pale_Skin", "5_o_Clock_Shadow", "Heavy_Makeup",
]  # fmt: skip
_CHUNK = 64  # images per render batch: keeps (B, H, W) temporaries cache-sized at 64 px
_F32 = np.float32
_SKIN = np.array([[255, 226, 200], [241, 194, 160], [224, 172, 130], [198, 134, 98],
                  [141, 85, 56], [95, 60, 40]], _F32) / 255  # fmt: skip
_HAIR = np.array([[28, 24, 22], [92, 58, 34], [222, 192, 124], [178, 175, 170],
                  [150, 68, 34]], _F32) / 255  # black brown blond grey red  # fmt: skip
# P(hair colour) for (female young, female old, male young, male old)
_HAIR_P = np.array([[.33, .38, .22, 0, .07], [.22, .28, .13, .35, .02],
                    [.45, .42, .07, 0, .06], [.22, .22, .03, .50, .03]])  # fmt: skip
_IRIS = np.array([[70, 45, 25], [60, 100, 145], [75, 105, 65], [35, 25, 20]], _F32) / 255
_SHADOW = np.array([[120, 70, 130], [125, 85, 60], [70, 90, 150], [75, 65, 75]], _F32) / 255
_LIPSTICK = np.array([[190, 30, 50], [205, 70, 100], [150, 20, 40], [170, 60, 60]], _F32) / 255


def _identities(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    u = lambda lo, hi: rng.uniform(lo, hi, n).astype(_F32)  # noqa: E731
    male = rng.random(n) < 0.4
    young = rng.random(n) < np.where(male, 0.66, 0.81)
    t = 5 * rng.beta(1.3, 2.6, n)  # skin tone position on the palette, mostly light
    i0 = np.minimum(t.astype(int), 4)
    skin = _SKIN[i0] + (t - i0)[:, None].astype(_F32) * (_SKIN[i0 + 1] - _SKIN[i0])
    cum = np.cumsum(_HAIR_P[male * 2 + ~young], axis=1)
    hair_cat = (rng.random(n)[:, None] > cum).sum(1).clip(0, 4)
    bald = male & (rng.random(n) < np.where(young, 0.02, 0.3))
    lipstick = ~male & (rng.random(n) < 0.7)
    beard = male & (rng.random(n) < 0.45)
    stubble = male & ~beard & (rng.random(n) < 0.4)
    makeup = lipstick & (rng.random(n) < 0.75)
    a = np.where(male, u(0.44, 0.52), u(0.40, 0.47))
    return dict(
        male=male, young=young, skin=skin * u(0.95, 1.05)[:, None], pale=t < 0.35,
        hair_cat=hair_cat, hair=np.clip(_HAIR[hair_cat] * u(0.8, 1.15)[:, None], 0, 1),
        long=~bald & (rng.random(n) < np.where(male, 0.06, 0.9)), hair_len=u(0.15, 0.9),
        vol=np.where(male, u(0.03, 0.07), u(0.06, 0.12)), bald=bald,
        bangs=~bald & (rng.random(n) < np.where(male, 0.08, 0.28)), hl0=u(0.4, 0.62),
        a=a, b=a * u(1.22, 1.38), jaw=np.where(male, u(0.55, 1.0), u(0.0, 0.35)),
        ex=u(0.34, 0.44), ey=u(-0.2, -0.08), er=u(0.085, 0.11),
        iris=_IRIS[rng.integers(0, 4, n)], liner=np.where(lipstick, u(0.008, 0.014), 0.004),
        brow_t=np.where(male, u(0.026, 0.04), u(0.011, 0.018)), brow_l=u(0.09, 0.13),
        brow_a=rng.normal(0, 0.12, n).astype(_F32) - 0.06 * ~male, brow_gap=u(0.08, 0.12),
        nose_w=u(0.055, 0.085) * np.where(male, 1.15, 1.0), nose_y=u(0.2, 0.3),
        mouth_y=u(0.5, 0.6), mouth_w=u(0.15, 0.19),
        lip_t=np.where(male, u(0.02, 0.03), u(0.026, 0.038)),
        lipstick=lipstick, lip=np.where(lipstick[:, None], _LIPSTICK[rng.integers(0, 4, n)],
                                        skin * np.array([0.85, 0.62, 0.62], _F32)),
        beard=beard, stubble=stubble, makeup=makeup, shadow=_SHADOW[rng.integers(0, 4, n)],
        beard_a=np.where(beard, u(0.35, 0.8), u(0.12, 0.25) * stubble),
        mustache=male & (rng.random(n) < 0.12) | beard,
        wrinkle=np.where(young, 0, u(0.2, 0.45)), rough=np.where(young, u(0.006, 0.012),
                                                                  u(0.025, 0.04)),
        wearer=rng.random(n) < np.where(young, 0.07, 0.22) + 0.04 * male,
        frame=rng.choice([0.08, 0.25, 0.55], (n, 1)) * np.array([1, 0.9, 0.7], _F32),
        frame_t=u(0.01, 0.02), lens_r=u(0.105, 0.13), tint=np.where(rng.random(n) < 0.15,
                                                                   u(0.6, 0.85), u(0, 0.12)),
        smile_p=np.clip(rng.normal(0.48, 0.15, n), 0.05, 0.95), base_scale=u(0.95, 1.05),
    )  # fmt: skip


def _images(rng: np.random.Generator, idn: dict, ids: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image parameters: identity traits gathered by `ids`, plus expression and nuisance."""
    n = len(ids)
    u = lambda lo, hi, *s: rng.uniform(lo, hi, (n, *s)).astype(_F32)  # noqa: E731
    p = {k: v[ids] for k, v in idn.items()}
    smile = rng.random(n) < p["smile_p"]
    mouth_open = rng.random(n) < np.where(smile, 0.8, 0.15)
    p.update(
        smile=smile, open=mouth_open, glasses=rng.random(n) < np.where(p["wearer"], 0.9, 0.01),
        curv=np.where(smile, u(0.06, 0.095), rng.normal(0, 0.008, n).astype(_F32)),
        mouth_w=p["mouth_w"] * np.where(smile, u(1.25, 1.45), u(0.9, 1.05)),
        open_t=np.where(mouth_open, np.where(smile, u(0.028, 0.045), u(0.008, 0.016)), 0),
        teeth=smile & (rng.random(n) < 0.9), squint=np.where(smile, u(0.6, 0.85), u(0.9, 1.1)),
        dx=np.clip(rng.normal(0, 0.04, n), -0.1, 0.1).astype(_F32),
        dy=np.clip(rng.normal(0.06, 0.04, n), -0.04, 0.16).astype(_F32),
        scale=p["base_scale"] * u(0.9, 1.1), rot=np.clip(rng.normal(0, 0.06, n), -0.15, 0.15),
        bg=u(0.1, 0.9, 3) * 0.7 + u(0.1, 0.9, 1) * 0.3, bg_grad=u(-0.3, 0.3),
        bg_tex=u(0, 0.08), bg_freq=u(2, 12), bg_dir=u(0, math.pi), bg_phase=u(0, 6.3),
        clothes=u(0.08, 0.9, 3), bright=u(0.75, 1.15), light=u(-0.25, 0.25, 2),
        cast=u(0.92, 1.08, 3), noise=u(0.003, 0.018), hair_ph=u(0, 6.3), hair_f=u(40, 90),
    )  # fmt: skip
    return p


def _labels(p: dict) -> np.ndarray:
    c = p["hair_cat"]
    hair_ok = ~p["bald"]
    cols = dict(
        Smiling=p["smile"], Male=p["male"], Young=p["young"], Eyeglasses=p["glasses"],
        Blond_Hair=hair_ok & (c == 2), Black_Hair=hair_ok & (c == 0),
        Brown_Hair=hair_ok & (c == 1), Gray_Hair=hair_ok & (c == 3), Bangs=p["bangs"],
        Bald=p["bald"], Mouth_Slightly_Open=p["open"], Wearing_Lipstick=p["lipstick"],
        No_Beard=~p["beard"], Pale_Skin=p["pale"], **{"5_o_Clock_Shadow": p["stubble"]},
        Heavy_Makeup=p["makeup"],
    )  # fmt: skip
    return np.stack([cols[a] for a in ATTRIBUTES], 1).astype(np.int8)


def _ell(x, y, rx, ry):
    """Signed distance to an axis-aligned ellipse (negative inside), first-order accurate at
    the rim, so thin shapes (eyes, mustache) get a one-pixel edge along both axes too."""
    irx, iry = 1 / rx, 1 / ry
    x, y = x * irx, y * iry
    gx, gy = x * irx, y * iry
    return (x * x + y * y - 1) / (2 * np.sqrt(gx * gx + gy * gy + 1e-12))  # (r^2-1)/|grad r^2|


def _rgb(r: float, g: float, b: float) -> np.ndarray:
    return np.array([r, g, b], _F32)[:, None, None, None]


class _Layer:
    """Some images of a chunk within a pixel window: face-frame coordinates, their
    parameters and (channel-first) pixels, plus the drawing primitives."""

    def __init__(self, p: dict, idx, X, Y, noise, img, k, U=None) -> None:
        self.p, self.idx, self.X, self.Y, self.AX, self.noise, self.img, self.k, self.U = (
            p, idx, X, Y, np.abs(X), noise, img, k, U)  # fmt: skip

    def strands(self) -> np.ndarray:
        """Hair colour with vertical strands; ignoring the small head tilt lets the
        texture be one row per image (U), not a full (H, W) sin."""
        return self.rgb("hair") * (1 + 0.07 * np.sin(self.c("hair_f") * self.U + self.c("hair_ph")))

    def c(self, key: str) -> np.ndarray:
        return np.asarray(self.p[key][self.idx], _F32)[:, None, None]

    def rgb(self, key: str) -> np.ndarray:
        return np.asarray(self.p[key][self.idx], _F32).T[:, :, None, None]  # (3, B, 1, 1)

    def any(self, key: str) -> bool:
        return bool(self.p[key][self.idx].any())

    def cov(self, d: np.ndarray) -> np.ndarray:
        """Signed distance (face units) -> coverage with a one-pixel anti-aliased ramp."""
        return np.clip(0.5 - d * self.k, 0, 1)

    def paint(self, alpha: np.ndarray, col) -> None:
        self.img += alpha * (col - self.img)  # channel-first keeps numpy's inner loops long

    def shade(self, alpha: np.ndarray, amount: float) -> None:
        """Darken (shadows, creases): keeps the hue below and costs a third of paint."""
        self.img *= 1 - amount * alpha

    def face(self) -> tuple[np.ndarray, np.ndarray]:
        """Face coverage and squared radius; the lower half blends the ellipse with a
        squarer quartic profile (jaw)."""
        a, b = self.c("a"), self.c("b")
        yp2 = (np.maximum(self.Y, 0) / b) ** 2
        r2 = (self.X / a) ** 2 + (self.Y / b) ** 2 + self.c("jaw") * (yp2 * yp2 - yp2)
        return self.cov((np.sqrt(r2) - 1) * a), r2


def _body(q: _Layer) -> None:
    a, b = q.c("a"), q.c("b")
    q.paint(q.cov(_ell(q.X, q.Y - b - 0.62, a * 2.1, 0.5)), q.rgb("clothes"))


def _back_hair(q: _Layer) -> None:  # long hair falls behind the neck, beside the face
    a, b, vol, L = q.c("a"), q.c("b"), q.c("vol"), q.c("hair_len")
    box = np.maximum(q.AX - a - vol, np.abs(q.Y - (b + L) / 2) - (b + L) / 2)
    q.paint(q.cov(np.minimum(_ell(q.X, q.Y, a + vol, b + vol), box)), q.strands())


def _neck(q: _Layer) -> None:
    a, b = q.c("a"), q.c("b")
    q.paint(q.cov(np.maximum(q.AX - a * 0.45, np.abs(q.Y - b) - 0.5)), q.rgb("skin") * 0.82)


def _ears(q: _Layer) -> None:
    q.paint(q.cov(_ell(q.AX - q.c("a") * 0.97, q.Y, 0.08, 0.14)), q.rgb("skin") * 0.9)


def _skin(q: _Layer) -> None:
    face, r2 = q.face()  # shaded towards the rim for volume; old skin is rougher
    q.paint(face, q.rgb("skin") * (1 - 0.15 * np.minimum(r2, 1) + q.c("rough") * q.noise))


def _beard(q: _Layer) -> None:  # beard or stubble on the lower face, rising into sideburns
    a, b = q.c("a"), q.c("b")
    top = q.c("nose_y") * b + 0.07 - 0.35 * b * (q.X / a) ** 2
    alpha = q.face()[0] * q.cov(top - q.Y) * q.c("beard_a") * (0.9 + 0.1 * q.noise)
    q.paint(alpha, q.rgb("hair") * 0.7)


def _forehead_lines(q: _Layer) -> None:
    a, b = q.c("a"), q.c("b")
    fl = np.maximum(np.abs(q.Y + b * 0.55 - 0.04 * (q.X / a) ** 2) - 0.006, q.AX - 0.45 * a)
    q.shade(q.cov(fl) * q.c("wrinkle"), 0.35)


def _eye_shadow(q: _Layer) -> None:  # Heavy_Makeup
    ex, ey, er = q.c("ex") * q.c("a"), q.c("ey") * q.c("b"), q.c("er")
    q.paint(q.cov(_ell(q.AX - ex, q.Y - ey + er * 0.3, er * 1.1, er * 0.6)) * 0.55, q.rgb("shadow"))


def _eyes(q: _Layer) -> None:
    ex, ey, er, sq = q.c("ex") * q.c("a"), q.c("ey") * q.c("b"), q.c("er"), q.c("squint")
    exx, eyy = q.AX - ex, q.Y - ey
    d_eye = _ell(exx, eyy, er, er * 0.5 * sq)  # smiling narrows the eyes
    q.shade(q.cov(d_eye - q.c("liner")), 0.85)
    eye = q.cov(d_eye)
    q.paint(eye, _rgb(0.93, 0.92, 0.88))
    d_iris = np.sqrt(exx * exx + eyy * eyy)
    q.paint(eye * q.cov(d_iris - er * 0.55), q.rgb("iris"))
    q.shade(eye * q.cov(d_iris - er * 0.22), 0.9)
    ang = q.c("brow_a")
    by = eyy + q.c("brow_gap") + 0.03 * (1 - sq)  # brows lift slightly when smiling
    bu, bv = exx * np.cos(ang) + by * np.sin(ang), by * np.cos(ang) - exx * np.sin(ang)
    bv = bv - 2.0 * bu * bu  # arch
    d_brow = np.sqrt(np.maximum(np.abs(bu) - q.c("brow_l"), 0) ** 2 + bv * bv) - q.c("brow_t")
    q.paint(q.cov(d_brow), q.rgb("hair") * 0.65)


def _nose_mouth(q: _Layer) -> None:
    X, AX, Y, b = q.X, q.AX, q.Y, q.c("b")
    ny, my, mw, nw = q.c("nose_y") * b, q.c("mouth_y") * b, q.c("mouth_w"), q.c("nose_w")
    q.shade(q.cov(_ell(X, Y - ny, nw, nw * 0.6)), 0.1)
    q.shade(q.cov(_ell(AX - nw * 0.5, Y - ny - 0.008, 0.018, 0.011)), 0.5)
    # nasolabial folds: deep with age, faint with a smile
    fold_x = nw * 1.4 + (Y - ny) * (mw * 1.1 - nw * 1.4) / (my + 0.02 - ny)
    fold = np.maximum(np.abs(AX - fold_x) - 0.007, np.abs(Y - (ny + my) / 2) - (my - ny) / 2)
    q.shade(q.cov(fold) * np.maximum(q.c("wrinkle"), 0.45 * q.c("smile")), 0.35)
    uu = np.minimum((X / mw) ** 2, 1)
    inside, taper, ot = q.cov(AX - mw), 1 - uu, q.c("open_t")
    yc = Y - my + q.c("curv") * uu - 0.3 * ot  # distance from the mouth line; smiles lift corners
    q.paint(inside * q.cov(np.abs(yc) - q.c("lip_t") * taper - ot - 0.004), q.rgb("lip"))
    q.shade(inside * q.cov(np.abs(yc) - 0.004), 0.45)
    if q.any("open"):  # open mouth: dark inside, upper teeth in most smiles
        mouth = inside * q.cov(np.abs(yc) - ot * taper)
        q.paint(mouth, _rgb(0.25, 0.06, 0.06))
        q.paint(mouth * q.cov(yc + 0.1 * ot) * q.c("teeth"), _rgb(0.93, 0.91, 0.85))


def _mustache(q: _Layer) -> None:
    my, mw = q.c("mouth_y") * q.c("b"), q.c("mouth_w")
    q.paint(q.cov(_ell(q.X, q.Y - my + 0.055, mw, 0.026)), q.rgb("hair") * 0.6)


def _hair_cap(q: _Layer) -> None:
    """Hair above a hairline that dips at the temples; bangs bring it down to the brows."""
    X, Y, a, b, vol, hl0 = q.X, q.Y, q.c("a"), q.c("b"), q.c("vol"), q.c("hl0")
    hl = q.c("bangs") * (q.c("ey") * b - q.c("brow_gap") - 0.05 + b * hl0) - b * hl0
    hl = hl + 0.45 * b * (X / a) ** 2
    cap = q.cov(_ell(X, Y, a + vol, b + vol * 1.6)) * q.cov(Y - hl)  # crown rises above head
    if q.any("bald"):
        bald = q.c("bald")
        cap *= 1 - bald + bald * q.cov(0.8 * a - q.AX) * q.cov(-Y - 0.1)  # bald: side fringe
    q.paint(cap, q.strands())


def _glasses(q: _Layer) -> None:  # tinted lenses, rims, bridge and temple arms
    AX, Y, ft, lr = q.AX, q.Y, q.c("frame_t"), q.c("lens_r")
    ex, ey, a = q.c("ex") * q.c("a"), q.c("ey") * q.c("b"), q.c("a")
    d_lens = np.sqrt((AX - ex) ** 2 + 1.3 * (Y - ey) ** 2) - lr
    q.paint(q.cov(d_lens) * q.c("tint"), 0.0)
    yb = np.abs(Y - ey + 0.015) - ft * 0.8
    bridge = np.maximum(yb, AX - ex + lr)
    arms = np.maximum(yb, np.maximum(ex + lr - AX, AX - a * 1.02))
    q.paint(q.cov(np.minimum(np.minimum(np.abs(d_lens) - ft, bridge), arms)), q.rgb("frame"))


# (layer, face-frame box holding it, images that have it); painted in this order
_LAYERS = [
    (_body, (-1.6, 1.6, 0.55, 2.6), None), (_back_hair, (-0.68, 0.68, -1.0, 1.7), "long"),
    (_neck, (-0.3, 0.3, -0.05, 1.25), None), (_ears, (-0.65, 0.65, -0.2, 0.2), "short"),
    (_skin, (-0.56, 0.56, -0.75, 0.75), None), (_beard, (-0.56, 0.56, -0.3, 0.75), "beard"),
    (_forehead_lines, (-0.3, 0.3, -0.5, -0.2), "old"),
    (_eye_shadow, (-0.45, 0.45, -0.3, 0.05), "makeup"), (_eyes, (-0.5, 0.5, -0.5, 0.05), None),
    (_nose_mouth, (-0.45, 0.45, 0.0, 0.6), None), (_mustache, (-0.35, 0.35, 0.1, 0.5), "mus"),
    (_hair_cap, (-0.7, 0.7, -1.0, 0.5), None),
    (_glasses, (-0.6, 0.6, -0.35, 0.15), "glasses"),
]  # fmt: skip


def _span(v: np.ndarray, s: int, n: int) -> slice:
    """Pixel rows (or columns) covering normalised coordinates v, with a margin."""
    return slice(max(int(v.min() * s / 2 + n / 2) - 1, 0), min(int(v.max() * s / 2 + n / 2) + 2, n))


def _render(p: dict, h: int, w: int, rng: np.random.Generator, out: np.ndarray) -> None:
    """Draw a chunk of images into out, uint8 (B, h, w, 3)."""
    s = min(h, w)  # normalised units: the shorter side spans [-1, 1], so faces always fit
    gy = ((np.arange(h, dtype=_F32) + 0.5 - h / 2) * (2 / s))[None, :, None]
    gx = ((np.arange(w, dtype=_F32) + 0.5 - w / 2) * (2 / s))[None, None, :]
    full = _Layer(p, slice(None), gx, gy, None, None, None)
    c, rgb = full.c, full.rgb
    pose = np.stack([np.cos(p["rot"]), np.sin(p["rot"]), p["scale"], p["dx"], p["dy"]], 1)
    cos, sin, sc, dx, dy = np.cos(c("rot")), np.sin(c("rot")), c("scale"), c("dx"), c("dy")
    X, Y = (cos * (gx - dx) + sin * (gy - dy)) / sc, (cos * (gy - dy) - sin * (gx - dx)) / sc
    U = (gx - dx) / sc  # (B, 1, w): horizontal face coordinate, ignoring tilt
    k = sc * (s / 2)  # pixels per face unit: edges ramp over one pixel at any resolution
    noise = rng.random(X.shape, dtype=_F32) * 2 - 1  # uniform: a third the cost of normal
    wave = np.sin(c("bg_freq") * (gx * np.cos(c("bg_dir")) + gy * np.sin(c("bg_dir")))
                  + c("bg_phase"))  # fmt: skip
    img = rgb("bg") * (1 + c("bg_grad") * gy + c("bg_tex") * wave)  # channel-first
    masks = dict(long=p["long"], short=~p["long"], beard=p["beard_a"] > 0, old=~p["young"],
                 glasses=p["glasses"], mus=p["mustache"], makeup=p["makeup"])  # fmt: skip

    for draw, (x_lo, x_hi, y_lo, y_hi), which in _LAYERS:
        # Small parts are drawn only in the pixel window that holds their box in every
        # selected image, and sparse ones only on the images that have them: most of the speed.
        idx = slice(None) if which is None else np.flatnonzero(masks[which])
        if isinstance(idx, np.ndarray) and idx.size == 0:  # i.e. which is not None
            continue
        co, si, sc_, dx_, dy_ = (v[:, None] for v in pose[idx].T)
        bx, by = np.array([x_lo, x_lo, x_hi, x_hi]), np.array([y_lo, y_hi, y_lo, y_hi])
        rows = _span(dy_ + sc_ * (si * bx + co * by), s, h)
        cols = _span(dx_ + sc_ * (co * bx - si * by), s, w)
        sub = img[:, idx, rows, cols]  # a view for all images, a copy for a selection
        w_ = (idx, rows, cols)
        draw(_Layer(p, idx, X[w_], Y[w_], noise[w_], sub, k[idx], U[idx, :, cols]))
        if which is not None:
            img[:, idx, rows, cols] = sub

    light = c("bright") * (1 + c("light")[..., 0] * gx + c("light")[..., 1] * gy)
    img *= light * rgb("cast") * 255
    img += noise[:, ::-1] * (446 * c("noise"))  # sensor noise (luminance only, cheap)
    np.copyto(out, np.clip(img, 0, 255, out=img).transpose(1, 2, 3, 0), casting="unsafe")


def generate_synthfaces(
    n_identities: int, images_per_identity: int, size: tuple[int, int], seed: int
) -> FaceDataset:
    """Draw n_identities x images_per_identity faces of size (h, w); same seed, same arrays."""
    h, w = (int(v) for v in size)
    if n_identities < 1 or images_per_identity < 1:
        raise DataError("synthfaces needs at least one identity and one image per identity")
    if min(h, w) < 16:
        raise DataError(f"synthfaces image size {(h, w)} is too small: use at least 16 px")
    if seed < 0:
        raise DataError(f"synthfaces seed must be a non-negative integer, got {seed}")
    rng = np.random.default_rng([seed, 0])
    idn = _identities(rng, n_identities)
    ids = np.repeat(np.arange(n_identities), images_per_identity)
    p = _images(rng, idn, ids)
    n = len(ids)
    images = np.empty((n, h, w, 3), np.uint8)
    chunk = max(8, _CHUNK * 4096 // (h * w))

    def job(start: int) -> None:
        sl = slice(start, min(start + chunk, n))
        # one noise stream per chunk, so threads never change the result
        rng = np.random.default_rng([seed, 1, start])
        _render({k: v[sl] for k, v in p.items()}, h, w, rng, images[sl])

    with ThreadPoolExecutor(min(4, os.cpu_count() or 1)) as pool:  # ufuncs release the GIL
        list(pool.map(job, range(0, n, chunk)))
    per = images_per_identity
    files = [f"synth_{i // per:06d}_{i % per:02d}.png" for i in range(n)]
    return FaceDataset(
        images=images, attributes=_labels(p), attribute_names=list(ATTRIBUTES),
        identities=ids.astype(np.int64), files=files,
        partitions=np.full(n, NO_PARTITION, np.int8), source="synthfaces",
    )  # fmt: skip


def load_synthfaces(
    n_images: int = 10000,
    images_per_identity: int = 20,
    size: tuple[int, int] = (64, 64),
    seed: int = 0,
    cache_dir: Path | None = None,
    use_cache: bool = True,
) -> FaceDataset:
    """The default embedded dataset: n_images faces, images_per_identity per person.

    Generates ceil(n_images / images_per_identity) identities (the last one may be cut
    short), cached on disk under a key of every parameter and GENERATOR_VERSION.
    """
    if n_images < 1:
        raise DataError(f"synthfaces n_images must be positive, got {n_images}")
    n_ids = math.ceil(n_images / images_per_identity) if images_per_identity > 0 else 0
    size = (int(size[0]), int(size[1]))

    def build() -> FaceDataset:
        return generate_synthfaces(n_ids, images_per_identity, size, seed)

    parts = dict(source="synthfaces", version=GENERATOR_VERSION, n_identities=n_ids,
                 images_per_identity=images_per_identity, size=list(size), seed=seed)  # fmt: skip
    ds = cached_dataset(parts, build, cache_dir) if use_cache else build()
    return ds if len(ds) == n_images else ds.subset(np.arange(n_images))


@register_source("synthfaces", needs_root=False)
def _from_request(req: SourceRequest) -> FaceDataset:
    d = req.data
    return load_synthfaces(
        n_images=d.synth_images, images_per_identity=d.synth_images_per_identity,
        size=req.preprocess.size, seed=d.synth_seed, cache_dir=req.decode["cache_dir"],
        use_cache=req.decode["use_cache"])
