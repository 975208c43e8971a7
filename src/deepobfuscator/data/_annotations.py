"""Helpers shared by the file-based sources (celeba, lfw, folder).

Annotation parsing uses plain str.split and list comprehensions, no pandas: the three
full-size CelebA files (200k rows each) parse in about 3 s of CPU.
"""

from __future__ import annotations

import gc
import hashlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from itertools import chain
from pathlib import Path

import numpy as np

from .base import (
    DataError,
    FaceDataset,
    Preprocess,
    check_on_bad_image,
    load_images,
    parse_binary_label,
)
from .cache import cached_dataset

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

# Token -> 0/1 for the common spellings, built with parse_binary_label so the accepted
# values stay defined in one place; other tokens go through it one by one (slow path).
_LABELS: dict[str, int] = {t: parse_binary_label(t, "") for t in ("1", "-1", "0")}
_CLASS_LABELS: dict[str, int] = dict(_LABELS)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while parsing large annotation files.

    Splitting 200k rows creates millions of lists that are all still alive; the collector's
    repeated full scans of them otherwise more than double the parse time.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def require_dir(path: Path, what: str, fix: str) -> Path:
    if not path.is_dir():
        raise DataError(f"{what} not found: {path}; {fix}")
    return path


def read_lines(path: Path, what: str, fix: str) -> list[str]:
    """All lines of a text annotation file (LF or CRLF), DataError if it is missing."""
    if not path.is_file():
        raise DataError(f"{what} not found: {path}; {fix}")
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read().splitlines()


def split_rows(
    path: Path, lines: Sequence[str], start: int, ncols: int, sep: str | None = None, hint: str = ""
) -> tuple[list[int], list[list[str]]]:
    """Non-blank lines from index `start` split into tokens, with their 1-based line numbers.

    List comprehensions rather than a per-row loop: this is the hot path for 200k rows.
    """
    rows = [line.split(sep) for line in lines[start:]]
    if sep is not None:
        rows = [[t.strip() for t in r] for r in rows]
    linenos = list(range(start + 1, len(lines) + 1))
    if any(len(r) != ncols for r in rows):  # blank lines or a malformed row
        for ln, r in zip(linenos, rows, strict=True):
            if any(r) and len(r) != ncols:
                raise DataError(
                    f"{path} line {ln}: expected {ncols} columns{hint}, got {len(r)}; "
                    "fix or delete that line"
                )
        keep = [i for i, r in enumerate(rows) if any(r)]
        rows, linenos = [rows[i] for i in keep], [linenos[i] for i in keep]
    return linenos, rows


def binary_table(
    rows: Sequence[Sequence[str]], columns: Sequence[str], where: Callable[[int], str],
    classes: bool = False,
) -> np.ndarray:
    """Rows of binary label tokens ('1', '-1', '0', ...) -> int8 0/1 array (rows, columns).
    classes=True (a folder CSV) also takes class indices 2..127 of multi-class columns.

    where(i) names row i's origin (file and line) for error messages.
    """
    labels = _CLASS_LABELS if classes else _LABELS
    shape = (len(rows), len(columns))
    try:
        flat = map(labels.__getitem__, chain.from_iterable(rows))
        return np.fromiter(flat, np.int8, count=shape[0] * shape[1]).reshape(shape)
    except KeyError:
        pass
    for i, row in enumerate(rows):  # rare spellings ('true', ' 1'): validate and learn them
        for token, col in zip(row, columns, strict=True):
            if token not in labels:
                labels[token] = parse_binary_label(token, f"{where(i)}, column {col!r}", classes)
    return binary_table(rows, columns, where, classes)


def int_column(
    values: Sequence[str], where: Callable[[int], str], what: str, valid: set[int] | None = None
) -> np.ndarray:
    """Integer tokens -> int64 array; errors name the row (where(i)) and the allowed values."""
    try:
        out = np.array([int(v) for v in values], dtype=np.int64)
        ok = valid is None or bool(np.isin(out, sorted(valid)).all())
    except ValueError:
        ok = False
    if not ok:
        i = next(i for i, v in enumerate(values) if not _is_int_in(v, valid))
        expected = f"an integer {what}" + (f" in {sorted(valid)}" if valid else "")
        raise DataError(f"{where(i)}: expected {expected}, got {values[i]!r}; fix that line")
    return out


def _is_int_in(value: str, valid: set[int] | None) -> bool:
    try:
        return int(value) in valid if valid is not None else True
    except ValueError:
        return False


def stable_ids(names: Sequence[str]) -> np.ndarray:
    """Strings -> int64 ids numbered by sorted name, so ids do not depend on row order."""
    index = {n: i for i, n in enumerate(sorted(set(names)))}
    return np.array([index[n] for n in names], dtype=np.int64)


def stamp(path: Path | None) -> list[int] | None:
    """(size, mtime) of a file or folder for cache keys; None when absent."""
    if path is None or not path.exists():
        return None
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def fingerprint(names: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]


def maybe_cached(
    parts: dict, build: Callable[[], FaceDataset], cache_dir: Path | None, use_cache: bool
) -> FaceDataset:
    return cached_dataset(parts, build, cache_dir) if use_cache else build()


def decode(
    source: str,
    image_dir: Path,
    files: list[str],
    origin: Callable[[int], str],
    attributes: np.ndarray,  # (len(files), len(attribute_names)), 0/1
    attribute_names: list[str],
    identities: np.ndarray,
    partitions: np.ndarray,
    preprocess: Preprocess,
    on_bad_image: str,
    skipped: list[str] | None = None,
) -> FaceDataset:
    """Check the listed images exist, decode them and assemble the dataset.

    origin(i) says where file i was listed (e.g. 'labels.csv line 3'), so a missing
    image is reported together with the annotation row that asked for it.
    """
    check_on_bad_image(on_bad_image)
    skipped = list(skipped or [])
    paths = [image_dir / f for f in files]
    present = np.array([p.is_file() for p in paths], dtype=bool)
    if not present.all():
        first = int(np.flatnonzero(~present)[0])
        if on_bad_image == "error":
            raise DataError(
                f"{source}: image {files[first]} listed in {origin(first)} is missing from "
                f"{image_dir} ({int((~present).sum())} missing in all); restore the file, remove "
                "its annotation row, or set data.on_bad_image=skip"
            )
        skipped += [f for f, ok in zip(files, present, strict=True) if not ok]
    idx = np.flatnonzero(present)
    images, keep = load_images(
        [paths[i] for i in idx], preprocess, on_bad_image, desc=f"decode {source}"
    )
    skipped += [files[i] for i, ok in zip(idx, keep, strict=True) if not ok]
    idx = idx[keep]
    if len(idx) == 0:
        raise DataError(
            f"{source}: no usable images under {image_dir} ({len(skipped)} skipped); "
            "check the data root and annotation files"
        )
    return FaceDataset(
        images=images,
        attributes=np.asarray(attributes, dtype=np.int8)[idx],
        attribute_names=list(attribute_names),
        identities=np.asarray(identities, dtype=np.int64)[idx],
        files=[files[i] for i in idx],
        partitions=np.asarray(partitions, dtype=np.int8)[idx],
        source=source,
        skipped=skipped,
    )
