"""The in-memory dataset every source returns, and the preprocessing shared by all.

Every source (synthfaces, celeba, lfw, folder) produces a :class:`FaceDataset`:
uint8 images already cropped and resized to the configured resolution, named
binary attributes (0/1) and, where known, identity labels. Keeping images as
uint8 (N, H, W, 3) keeps memory at a quarter of float32; batches are converted
to float in [0, 1] on the fly by :func:`to_tensor_batch`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import get_args

import numpy as np
from PIL import Image

from ..errors import DataError
from ..preprocessing import (
    ALIGN_MODES,
    RESAMPLE,
    FaceAligner,
    ImageRefused,
    OnBadImage,
    decode,
    parse_crop,
    to_uint8,
)

NO_IDENTITY = -1
NO_PARTITION = -1


def check_on_bad_image(on_bad_image: str) -> None:
    if on_bad_image not in get_args(OnBadImage):
        raise DataError(f"unknown on_bad_image {on_bad_image!r}: use one of "
                        f"{list(get_args(OnBadImage))}")


@dataclass(frozen=True)
class Preprocess:
    """How a photo becomes model input. The phone must apply exactly the same.

    crop: "square" takes the largest centred square (aligned face crops keep the
    face in the middle); "none" keeps the whole frame and lets the resize stretch;
    "center:F" / "center:Npx" a smaller centred square (deepobfuscator.preprocessing).
    size: output (height, width) in pixels. Values are scaled to [0, 1], RGB order.
    """

    size: tuple[int, int] = (64, 64)
    crop: str = "square"
    resample: str = "bilinear"
    value_range: tuple[float, float] = (0.0, 1.0)
    channel_order: str = "RGB"
    align: str = "none"  # none | mtcnn: find the face and warp it to CelebA's frame first

    def __post_init__(self) -> None:
        try:
            parse_crop(self.crop)
        except ValueError as exc:
            raise DataError(str(exc)) from None
        if self.resample not in RESAMPLE:
            raise DataError(f"unknown resample {self.resample!r}: use one of {sorted(RESAMPLE)}")
        if self.align not in ALIGN_MODES:
            raise DataError(f"unknown data.align {self.align!r}: use one of {list(ALIGN_MODES)}")
        if min(self.size) < 16:
            raise DataError(f"image size {self.size} is too small: use at least 16 px")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["size"] = list(self.size)
        d["value_range"] = list(self.value_range)
        if self.align == "none":  # runs and caches from before alignment keep their keys
            del d["align"]
        return d

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def apply(self, img: Image.Image, name: str = "the photo") -> np.ndarray:
        """PIL image -> uint8 array (H, W, 3) at the configured size."""
        return to_uint8(img, self.size, self.crop, self.resample, self.aligner(), name)

    def aligner(self) -> FaceAligner | None:
        if self.align == "none":
            return None
        from ..align import aligner_for
        from ..align.nets import detector_graphs

        return aligner_for(detector_graphs())


def load_image(path: Path, preprocess: Preprocess) -> np.ndarray:
    """Decode one image file, raising DataError that names the file on failure."""
    if not path.is_file():
        raise DataError(f"image file not found: {path} (check the data root and annotation files)")
    try:
        with decode(path) as img:
            return preprocess.apply(img, str(path))
    except ImageRefused as exc:
        raise DataError(f"{exc}; replace or delete it, or set data.on_bad_image=skip to skip "
                        "such files") from None


def load_images(
    paths: list[Path], preprocess: Preprocess, on_bad_image: str = "error", desc: str = "decode"
) -> tuple[np.ndarray, np.ndarray]:
    """Decode many images. Returns (images uint8 (N,H,W,3), keep mask over `paths`).

    With on_bad_image="skip", unreadable files are left out and counted in the mask;
    with "error" (the default) the first bad file raises DataError naming it.
    """
    from tqdm.auto import tqdm

    check_on_bad_image(on_bad_image)
    h, w = preprocess.size
    out = np.empty((len(paths), h, w, 3), dtype=np.uint8)
    keep = np.ones(len(paths), dtype=bool)
    for i, p in enumerate(tqdm(paths, desc=desc, unit="img", leave=False, mininterval=1.0)):
        try:
            out[i] = load_image(p, preprocess)
        except DataError:
            if on_bad_image == "error":
                raise
            keep[i] = False
    return out[keep], keep


@dataclass
class FaceDataset:
    """Images plus labels, all aligned on the first axis.

    images: uint8 (N, H, W, 3). attributes: int8 (N, A) with values 0/1.
    identities: int64 (N,), NO_IDENTITY where unknown. partitions: int8 (N,), the
    source's official split (0 train, 1 val, 2 test) or NO_PARTITION.
    files: a stable name per image (file name relative to the source root).
    """

    images: np.ndarray
    attributes: np.ndarray
    attribute_names: list[str]
    identities: np.ndarray
    files: list[str]
    partitions: np.ndarray
    source: str = ""
    skipped: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.images)
        for name, arr in (
            ("attributes", self.attributes),
            ("identities", self.identities),
            ("partitions", self.partitions),
            ("files", self.files),
        ):
            if len(arr) != n:
                raise DataError(
                    f"{self.source}: {name} has {len(arr)} rows but there are {n} images")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def has_identities(self) -> bool:
        return bool(len(self.identities)) and bool((self.identities != NO_IDENTITY).all())

    def attribute(self, name: str) -> np.ndarray:
        """Labels (0/1, int64) of one binary attribute; unknown names list the valid ones."""
        y = self.classes(name)
        if y.size and int(y.max()) > 1:
            raise DataError(
                f"{self.source}: column {name!r} holds classes 0..{int(y.max())}, not a binary "
                f"attribute; use it as a multi-class task, e.g. data.task=[{{name: {name}, "
                f"column: {name}, classes: {int(y.max()) + 1}}}]")
        return y

    def classes(self, name: str) -> np.ndarray:
        """Labels (int64) of one column as stored: 0/1, or the class index of a folder CSV's
        multi-class column."""
        return self.attributes[:, self.attribute_index(name)].astype(np.int64)

    def attribute_index(self, name: str) -> int:
        check_attribute_names([name], self.attribute_names, self.source)
        return self.attribute_names.index(name)

    def subset(self, index: np.ndarray) -> FaceDataset:
        index = np.asarray(index, dtype=np.int64)
        return FaceDataset(
            images=self.images[index],
            attributes=self.attributes[index],
            attribute_names=list(self.attribute_names),
            identities=self.identities[index],
            files=[self.files[i] for i in index],
            partitions=self.partitions[index],
            source=self.source,
        )


def check_attribute_names(names: list[str], valid: list[str], source: str) -> None:
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise DataError(
            f"unknown attribute name(s) {unknown} for source {source!r}; valid names: "
            + ", ".join(valid)
        )


def to_tensor_batch(images: np.ndarray):
    """uint8 (B,H,W,3) numpy -> float32 torch tensor (B,3,H,W) in [0, 1]."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)


MAX_CLASS = 127  # labels are stored as int8


def parse_binary_label(value: str, where: str, classes: bool = False) -> int:
    """'1'/'-1'/'0' (CelebA and CSV conventions) -> 0/1; with `classes` (a folder CSV) also
    a class index 2..127 of a multi-class column; anything else is a DataError."""
    v = value.strip()
    if v in ("1", "1.0", "true", "True"):
        return 1
    if v in ("-1", "0", "-1.0", "0.0", "false", "False"):
        return 0
    if classes and v.isdigit() and 2 <= int(v) <= MAX_CLASS:
        return int(v)
    raise DataError(f"{where}: expected a binary label (1, 0 or -1)"
                    + (f" or a class index (0..{MAX_CLASS})" if classes else "")
                    + f", got {value!r}")
