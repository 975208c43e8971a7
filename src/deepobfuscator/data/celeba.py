"""CelebA in its official layout: the full download or any subset with matching annotation rows.

root/img_align_celeba/*.jpg, root/list_attr_celeba.txt (count line, attribute names,
then "000001.jpg -1 1 ..."), root/list_eval_partition.txt ("000001.jpg 0") and,
optionally, root/identity_CelebA.txt ("000001.jpg 2880"). Whitespace separated, LF or
CRLF. The attribute file defines which images exist and their order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ._annotations import (
    binary_table,
    decode,
    gc_paused,
    int_column,
    maybe_cached,
    read_lines,
    require_dir,
    split_rows,
    stamp,
)
from .base import NO_IDENTITY, DataError, FaceDataset, Preprocess
from .factory import SourceRequest, register_source

IMAGE_DIR = "img_align_celeba"
ATTR_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
IDENTITY_FILE = "identity_CelebA.txt"
LAYOUT = (
    f"expected root/{IMAGE_DIR}/, root/{ATTR_FILE}, root/{PARTITION_FILE} and optionally "
    f"root/{IDENTITY_FILE}, as in the official CelebA download"
)


def load_celeba(
    root: Path,
    preprocess: Preprocess,
    partitions: list[int] | None = None,
    on_bad_image: str = "error",
    cache_dir: Path | None = None,
    use_cache: bool = True,
) -> FaceDataset:
    """Load CelebA, optionally only the official partitions given (0 train, 1 val, 2 test)."""
    root = Path(root).expanduser()
    require_dir(root, "CelebA root", f"point data.root at the CelebA folder; {LAYOUT}")
    image_dir = require_dir(root / IMAGE_DIR, "CelebA image folder", LAYOUT)
    for name in (ATTR_FILE, PARTITION_FILE):
        if not (root / name).is_file():  # checked before the cache so a hit cannot hide it
            raise DataError(f"CelebA annotation file not found: {root / name}; {LAYOUT}")
    wanted = None if partitions is None else sorted({int(p) for p in partitions})
    if wanted is not None and (not wanted or not set(wanted) <= {0, 1, 2}):
        raise DataError(
            f"celeba partitions must be a non-empty subset of 0 (train), 1 (val), 2 (test); "
            f"got {partitions}"
        )
    parts = {
        "source": "celeba",
        "root": str(root.resolve()),
        "partitions": wanted,
        "preprocess": preprocess.to_dict(),
        "annotations": {n: stamp(root / n) for n in (ATTR_FILE, PARTITION_FILE, IDENTITY_FILE)},
        # the folder's mtime changes when images are added or removed (matters for "skip")
        "image_dir": stamp(image_dir),
        "on_bad_image": on_bad_image,
    }
    return maybe_cached(
        parts,
        lambda: _build(root, image_dir, preprocess, wanted, on_bad_image),
        cache_dir,
        use_cache,
    )


def _build(
    root: Path, image_dir: Path, preprocess: Preprocess, wanted: list[int] | None, on_bad_image: str
) -> FaceDataset:
    with gc_paused():
        files, origin, names, attributes, partitions, identities = _parse(root)
    idx = np.arange(len(files)) if wanted is None else np.flatnonzero(np.isin(partitions, wanted))
    return decode(
        "celeba",
        image_dir,
        [files[i] for i in idx],
        lambda i: origin(idx[i]),
        attributes[idx],
        names,
        identities[idx],
        partitions[idx],
        preprocess,
        on_bad_image,
    )


def _parse(
    root: Path,
) -> tuple[list[str], Callable[[int], str], list[str], np.ndarray, np.ndarray, np.ndarray]:
    """(files, origin of row i, attribute names, attributes, partitions, identities)."""
    attr_path = root / ATTR_FILE
    lines = read_lines(attr_path, "CelebA attribute file", LAYOUT)
    # The count line is only checked for being a number: subsets often keep the original count.
    if len(lines) < 2 or not lines[0].strip().isdigit():
        first = lines[0][:40] if lines else ""
        raise DataError(
            f"{attr_path} line 1: expected the image count, got {first!r}; "
            "the file must start with a count line, then a line of attribute names"
        )
    names = lines[1].split()
    if not names:
        raise DataError(f"{attr_path} line 2: expected the attribute names, got an empty line")
    hint = " (file name, then one -1/1 label per attribute named on line 2)"
    linenos, rows = split_rows(attr_path, lines, 2, len(names) + 1, hint=hint)

    def origin(i: int) -> str:
        return f"{attr_path} line {linenos[i]}"

    files = [r[0] for r in rows]
    if len(set(files)) != len(files):
        dup = next(f for f, n in Counter(files).items() if n > 1)
        raise DataError(f"{attr_path}: {dup} is listed twice; keep one row per image")
    attributes = binary_table([r[1:] for r in rows], names, origin)
    partitions = _lookup(root / PARTITION_FILE, "partition", files, np.int8, valid={0, 1, 2})
    if (root / IDENTITY_FILE).is_file():
        identities = _lookup(root / IDENTITY_FILE, "identity", files, np.int64)
    else:
        identities = np.full(len(files), NO_IDENTITY, dtype=np.int64)
    return files, origin, names, attributes, partitions, identities


def _lookup(
    path: Path, what: str, files: list[str], dtype: type, valid: set[int] | None = None
) -> np.ndarray:
    """Integer column of a two-column "file value" annotation file, in `files` order."""
    lines = read_lines(path, f"CelebA {what} file", LAYOUT)
    linenos, rows = split_rows(path, lines, 0, 2, hint=f" (file name and {what})")
    values = dict(rows)
    missing = [f for f in files if f not in values]
    if missing:
        raise DataError(
            f"{path}: {len(missing)} image(s) listed in {ATTR_FILE} have no {what} row, e.g. "
            f"{missing[:3]}; add a row 'file {what}' for each or remove them from {ATTR_FILE}"
        )

    def where(i: int) -> str:  # only called for an error, so the reverse lookup can be slow
        line_of = {r[0]: ln for ln, r in zip(linenos, rows, strict=True)}
        return f"{path} line {line_of[files[i]]}"

    return int_column([values[f] for f in files], where, what, valid).astype(dtype)


@register_source("celeba")
def _from_request(req: SourceRequest) -> FaceDataset:
    assert req.root is not None
    return load_celeba(req.root, req.preprocess, partitions=req.partitions, **req.decode)
