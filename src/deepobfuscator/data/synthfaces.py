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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .base import NO_PARTITION, DataError, FaceDataset
from .cache import cached_dataset

GENERATOR_VERSION = "synthfaces-1"  # bump whenever the pixels or labels for a seed change
ATTRIBUTES = [
    "Smiling", "Male", "Young", "Eyeglasses", "Blond_Hair", "Black_Hair", "Brown_Hair",
    "Gray_Hair", "Bangs", "Bald", "Mouth_Slightly_Open", "Wearing_Lipstick", "No_Beard",
    "Pale_Skin",
]  # fmt: skip
_CHUNK = 128  # images per render batch: keeps (B, H, W) temporaries cache-sized at 64 px
F32 = np.float32
_SKIN = np.array([[255, 226, 200], [241, 194, 160], [224, 172, 130], [198, 134, 98],
                  [141, 85, 56], [95, 60, 40]], F32) / 255  # fmt: skip
_HAIR = np.array([[28, 24, 22], [92, 58, 34], [222, 192, 124], [178, 175, 170],
                  [150, 68, 34]], F32) / 255  # black, brown, blond, grey, red  # fmt: skip
# P(hair colour) for (female young, female old, male young, male old)
_HAIR_P = np.array([[.30, .33, .30, 0, .07], [.20, .25, .18, .35, .02],
                    [.45, .40, .09, 0, .06], [.22, .20, .05, .50, .03]])  # fmt: skip
_IRIS = np.array([[70, 45, 25], [60, 100, 145], [75, 105, 65], [35, 25, 20]], F32) / 255
_LIPSTICK = np.array([[190, 30, 50], [205, 70, 100], [150, 20, 40], [170, 60, 60]], F32) / 255


def _identities(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    u = lambda lo, hi: rng.uniform(lo, hi, n).astype(F32)  # noqa: E731
    male = rng.random(n) < 0.4
    young = rng.random(n) < np.where(male, 0.66, 0.81)
    t = 5 * rng.beta(1.3, 2.6, n)  # skin tone position on the palette, mostly light
    i0 = np.minimum(t.astype(int), 4)
    skin = _SKIN[i0] + (t - i0)[:, None].astype(F32) * (_SKIN[i0 + 1] - _SKIN[i0])
    cum = np.cumsum(_HAIR_P[male * 2 + ~young], axis=1)
    hair_cat = (rng.random(n)[:, None] > cum).sum(1).clip(0, 4)
    bald = male & (rng.random(n) < np.where(young, 0.02, 0.3))
    lipstick = ~male & (rng.random(n) < 0.7)
    beard = male & (rng.random(n) < 0.45)
    a = np.where(male, u(0.44, 0.52), u(0.40, 0.47))
    return dict(
        male=male, young=young, skin=skin * u(0.95, 1.05)[:, None], pale=t < 0.35,
        hair_cat=hair_cat, hair=np.clip(_HAIR[hair_cat] * u(0.8, 1.15)[:, None], 0, 1),
        long=~bald & (rng.random(n) < np.where(male, 0.08, 0.88)), hair_len=u(0.15, 0.9),
        vol=np.where(male, u(0.03, 0.07), u(0.06, 0.12)), bald=bald,
        bangs=~bald & (rng.random(n) < np.where(male, 0.08, 0.28)), hl0=u(0.4, 0.62),
        a=a, b=a * u(1.22, 1.38), jaw=np.where(male, u(0.55, 1.0), u(0.0, 0.35)),
        ex=u(0.34, 0.44), ey=u(-0.2, -0.08), er=u(0.085, 0.11),
        iris=_IRIS[rng.integers(0, 4, n)], liner=np.where(lipstick, u(0.012, 0.02), 0.004),
        brow_t=np.where(male, u(0.024, 0.036), u(0.011, 0.018)), brow_l=u(0.09, 0.13),
        brow_a=rng.normal(0, 0.12, n).astype(F32) - 0.06 * ~male, brow_gap=u(0.08, 0.12),
        nose_w=u(0.055, 0.085) * np.where(male, 1.15, 1.0), nose_y=u(0.2, 0.3),
        mouth_y=u(0.5, 0.6), mouth_w=u(0.15, 0.19), lip_t=u(0.022, 0.034),
        lipstick=lipstick, lip=np.where(lipstick[:, None], _LIPSTICK[rng.integers(0, 4, n)],
                                        skin * np.array([0.85, 0.62, 0.62], F32)),
        beard=beard, beard_a=u(0.35, 0.8), mustache=male & (rng.random(n) < 0.12) | beard,
        wrinkle=np.where(young, 0, u(0.2, 0.45)), rough=np.where(young, u(0.006, 0.012),
                                                                  u(0.025, 0.04)),
        wearer=rng.random(n) < np.where(young, 0.07, 0.22) + 0.04 * male,
        frame=rng.choice([0.08, 0.25, 0.55], (n, 1)) * np.array([1, 0.9, 0.7], F32),
        frame_t=u(0.01, 0.02), lens_r=u(0.105, 0.13), tint=np.where(rng.random(n) < 0.15,
                                                                   u(0.6, 0.85), u(0, 0.12)),
        smile_p=np.clip(rng.normal(0.48, 0.15, n), 0.05, 0.95), base_scale=u(0.95, 1.05),
    )  # fmt: skip


def _images(rng: np.random.Generator, idn: dict, ids: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image parameters: identity traits gathered by `ids`, plus expression and nuisance."""
    n = len(ids)
    u = lambda lo, hi, *s: rng.uniform(lo, hi, (n, *s)).astype(F32)  # noqa: E731
    p = {k: v[ids] for k, v in idn.items()}
    smile = rng.random(n) < p["smile_p"]
    mouth_open = rng.random(n) < np.where(smile, 0.75, 0.18)
    p.update(
        smile=smile, open=mouth_open, glasses=rng.random(n) < np.where(p["wearer"], 0.9, 0.01),
        curv=np.where(smile, u(0.05, 0.085), rng.normal(0, 0.008, n).astype(F32)),
        mouth_w=p["mouth_w"] * np.where(smile, u(1.3, 1.5), u(0.95, 1.05)),
        open_t=np.where(mouth_open, np.where(smile, u(0.022, 0.04), u(0.008, 0.016)), 0),
        teeth=smile & (rng.random(n) < 0.85), squint=np.where(smile, u(0.6, 0.85), u(0.9, 1.1)),
        dx=np.clip(rng.normal(0, 0.04, n), -0.1, 0.1).astype(F32),
        dy=np.clip(rng.normal(0.06, 0.04, n), -0.04, 0.16).astype(F32),
        scale=p["base_scale"] * u(0.9, 1.1), rot=np.clip(rng.normal(0, 0.06, n), -0.15, 0.15),
        bg=u(0.1, 0.9, 3) * 0.7 + u(0.1, 0.9, 1) * 0.3, bg_grad=u(-0.3, 0.3),
        bg_tex=u(0, 0.08), bg_freq=u(2, 12), bg_dir=u(0, math.pi), bg_phase=u(0, 6.3),
        clothes=u(0.08, 0.9, 3), bright=u(0.75, 1.15), light=u(-0.25, 0.25, 2),
        cast=u(0.92, 1.08, 3), noise=u(0.004, 0.025), hair_ph=u(0, 6.3), hair_f=u(40, 90),
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
        No_Beard=~p["beard"], Pale_Skin=p["pale"],
    )  # fmt: skip
    return np.stack([cols[a] for a in ATTRIBUTES], 1).astype(np.int8)


def _ell(x, y, rx, ry):
    """Approximate signed distance to an axis-aligned ellipse (negative inside)."""
    return (np.sqrt((x / rx) ** 2 + (y / ry) ** 2) - 1) * np.minimum(rx, ry)


def _rgb(r: float, g: float, b: float) -> np.ndarray:
    return np.array([r, g, b], F32)[:, None, None, None]


def _render(p: dict, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    s = min(h, w)  # normalised units: the shorter side spans [-1, 1], so faces always fit
    gy = ((np.arange(h, dtype=F32) + 0.5 - h / 2) * (2 / s))[None, :, None]
    gx = ((np.arange(w, dtype=F32) + 0.5 - w / 2) * (2 / s))[None, None, :]
    c = lambda k: np.asarray(p[k], F32)[:, None, None]  # noqa: E731
    c3 = lambda k: np.asarray(p[k], F32).T[:, :, None, None]  # noqa: E731  colours (3, B, 1, 1)
    cos, sin, sc, dx, dy = np.cos(c("rot")), np.sin(c("rot")), c("scale"), c("dx"), c("dy")
    x0, y0 = gx - dx, gy - dy
    X, Y = (cos * x0 + sin * y0) / sc, (cos * y0 - sin * x0) / sc  # face frame, y down
    AX = np.abs(X)  # the face is symmetric: one evaluation draws both eyes, brows, ...
    k = sc * (s / 2)  # pixels per face unit: edges ramp over one pixel at any resolution

    def region(x_lo: float, x_hi: float, y_lo: float, y_hi: float) -> tuple:
        """Pixel window holding a face-frame box in every image of the chunk (small parts
        are drawn only there, which is most of the speed)."""
        corners = [(x, y) for x in (x_lo, x_hi) for y in (y_lo, y_hi)]
        xi = np.stack([dx + sc * (cos * x - sin * y) for x, y in corners])
        yi = np.stack([dy + sc * (sin * x + cos * y) for x, y in corners])

        def px(lo, hi, n):
            return slice(max(int(lo * s / 2 + n / 2) - 1, 0), min(int(hi * s / 2 + n / 2) + 2, n))

        return slice(None), px(yi.min(), yi.max(), h), px(xi.min(), xi.max(), w)

    def cov(d):
        return np.clip(0.5 - d * k, 0, 1)

    def paint(dst, alpha, col):
        dst += alpha * (col - dst)  # channel-first: (3, B, H, W) keeps inner loops long

    B = len(p["dx"])
    wave = np.sin(c("bg_freq") * (gx * np.cos(c("bg_dir")) + gy * np.sin(c("bg_dir")))
                  + c("bg_phase"))  # fmt: skip
    img = c3("bg") * (1 + c("bg_grad") * gy + c("bg_tex") * wave)
    a, b, jaw, vol, L = c("a"), c("b"), c("jaw"), c("vol"), c("hair_len")
    skin, hair = c3("skin"), c3("hair")
    strands = hair * (1 + 0.07 * np.sin(c("hair_f") * X + c("hair_ph")))
    noise = rng.random((B, h, w), dtype=F32) * 2 - 1  # uniform: a third the cost of normal

    # body, then long hair behind the neck and beside the face, neck, ears
    paint(img, cov(_ell(X, Y - b - 0.62, a * 2.1, 0.5)), c3("clothes"))
    box = np.maximum(AX - a - vol, np.abs(Y - (b + L) / 2) - (b + L) / 2)
    paint(img, cov(np.minimum(_ell(X, Y, a + vol, b + vol), box)) * c("long"), strands)
    paint(img, cov(np.maximum(AX - a * 0.45, np.abs(Y - b) - 0.5)), skin * 0.82)
    paint(img, cov(_ell(AX - a * 0.97, Y, 0.08, 0.14)) * (1 - c("long")), skin * 0.9)
    # face: the lower half blends the ellipse with a squarer quartic profile (jaw)
    yp2 = (np.maximum(Y, 0) / b) ** 2
    r2 = (X / a) ** 2 + (Y / b) ** 2 + jaw * (yp2 * yp2 - yp2)
    face = cov((np.sqrt(r2) - 1) * a)
    paint(img, face, skin * (1 - 0.15 * np.minimum(r2, 1) + c("rough") * noise))
    ey, ny, my, mw = c("ey") * b, c("nose_y") * b, c("mouth_y") * b, c("mouth_w")
    # beard / stubble on the lower face, rising into sideburns at the sides
    beard = face * cov(ny + 0.07 - 0.35 * b * (X / a) ** 2 - Y) * c("beard") * c("beard_a")
    paint(img, beard * (0.9 + 0.1 * np.clip(noise, -1, 1)), hair * 0.7)

    re = region(-0.6, 0.6, -0.5, 0.12)  # eyes, brows, forehead wrinkles, glasses
    Xe, AXe, Ye, im = X[re], AX[re], Y[re], img[re]
    fl = np.maximum(np.abs(Ye + b * 0.55 - 0.04 * (Xe / a) ** 2) - 0.006, AXe - 0.45 * a)
    paint(im, cov(fl) * face[re] * c("wrinkle"), skin * 0.65)
    ex, er, sq = c("ex") * a, c("er"), c("squint")
    exx, eyy = AXe - ex, Ye - ey
    d_eye = _ell(exx, eyy, er, er * 0.5 * sq)  # smiling narrows the eyes
    paint(im, cov(d_eye - c("liner")), _rgb(0.12, 0.1, 0.1))
    eye = cov(d_eye)
    paint(im, eye, _rgb(0.93, 0.92, 0.88))
    d_iris = np.sqrt(exx * exx + eyy * eyy)
    paint(im, eye * cov(d_iris - er * 0.55), c3("iris"))
    paint(im, eye * cov(d_iris - er * 0.22), _rgb(0.05, 0.04, 0.04))
    ang = c("brow_a")
    by = eyy + c("brow_gap") + 0.03 * (1 - sq)  # brows lift slightly when smiling
    bu, bv = exx * np.cos(ang) + by * np.sin(ang), by * np.cos(ang) - exx * np.sin(ang)
    bv = bv - 2.0 * bu * bu  # arch
    d_brow = np.sqrt(np.maximum(np.abs(bu) - c("brow_l"), 0) ** 2 + bv * bv) - c("brow_t")
    paint(im, cov(d_brow), hair * 0.65)

    rm = region(-0.45, 0.45, 0.0, 0.55)  # nose, folds, mouth
    X2, AX2, Y2, im = X[rm], AX[rm], Y[rm], img[rm]
    nw = c("nose_w")
    paint(im, cov(_ell(X2, Y2 - ny, nw, nw * 0.6)) * 0.45, skin * 0.78)
    paint(im, cov(_ell(AX2 - nw * 0.5, Y2 - ny - 0.008, 0.018, 0.011)) * 0.8, skin * 0.4)
    fold_x = nw * 1.4 + (Y2 - ny) * (mw * 1.1 - nw * 1.4) / (my + 0.02 - ny)
    fold = np.maximum(np.abs(AX2 - fold_x) - 0.007, np.abs(Y2 - (ny + my) / 2) - (my - ny) / 2)
    paint(im, cov(fold) * np.maximum(c("wrinkle"), 0.25 * c("smile")), skin * 0.7)
    paint(im, cov(_ell(X2, Y2 - my + 0.055, mw, 0.026)) * c("mustache"), hair * 0.6)
    uu = np.minimum((X2 / mw) ** 2, 1)
    inside, taper, ot = cov(AX2 - mw), 1 - uu, c("open_t")
    yc = Y2 - my + c("curv") * uu - 0.3 * ot  # distance from the mouth line; smiles lift corners
    paint(im, inside * cov(np.abs(yc) - c("lip_t") * taper - ot - 0.004), c3("lip"))
    paint(im, inside * cov(np.abs(yc) - 0.004) * 0.7, c3("lip") * 0.4)
    mouth = inside * cov(np.abs(yc) - ot * taper)
    paint(im, mouth, _rgb(0.25, 0.06, 0.06))
    paint(im, mouth * cov(yc + 0.1 * ot) * c("teeth"), _rgb(0.93, 0.91, 0.85))

    # hair cap above a hairline that dips at the temples; bangs bring it down to the brows
    hl = c("bangs") * (ey - c("brow_gap") - 0.05 + b * c("hl0")) - b * c("hl0")
    hl = hl + 0.45 * b * (X / a) ** 2 + 0.015 * np.sin(45 * X)
    cap = cov(_ell(X, Y, a + vol, b + vol * 1.6)) * cov(Y - hl)  # crown rises above the head
    bald = c("bald")
    cap *= 1 - bald + bald * cov(0.8 * a - AX) * cov(-Y - 0.1)  # bald: only a side fringe
    paint(img, cap, strands)

    # glasses: tinted lenses, rims, bridge and temple arms
    AXg, Yg, im, gl, ft, lr = AX[re], Y[re], img[re], c("glasses"), c("frame_t"), c("lens_r")
    d_lens = np.sqrt((AXg - ex) ** 2 + 1.3 * (Yg - ey) ** 2) - lr
    paint(im, cov(d_lens) * c("tint") * gl, 0.0)
    yb = np.abs(Yg - ey + 0.015) - ft * 0.8
    bridge = np.maximum(yb, AXg - ex + lr)
    arms = np.maximum(yb, np.maximum(ex + lr - AXg, AXg - a * 1.02))
    paint(im, cov(np.minimum(np.minimum(np.abs(d_lens) - ft, bridge), arms)) * gl, c3("frame"))

    light = c("bright") * (1 + c("light")[..., 0] * gx + c("light")[..., 1] * gy)
    img *= light * c3("cast")
    img += (rng.random(img.shape, dtype=F32) - 0.5) * (3.5 * c("noise"))
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8).transpose(1, 2, 3, 0)


def generate_synthfaces(
    n_identities: int, images_per_identity: int, size: tuple[int, int], seed: int
) -> FaceDataset:
    """Draw n_identities x images_per_identity faces of size (h, w); same seed, same arrays."""
    h, w = (int(v) for v in size)
    if n_identities < 1 or images_per_identity < 1:
        raise DataError("synthfaces needs at least one identity and one image per identity")
    if min(h, w) < 16:
        raise DataError(f"synthfaces image size {(h, w)} is too small: use at least 16 px")
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
        images[sl] = _render({k: v[sl] for k, v in p.items()}, h, w,
                             np.random.default_rng([seed, 1, start]))  # fmt: skip

    with ThreadPoolExecutor(max_workers=2) as pool:  # numpy releases the GIL in ufuncs
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
    """The default embedded dataset: n_images faces, images_per_identity per person."""
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
