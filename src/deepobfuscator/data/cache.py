"""Decode-once cache: a dataset at one resolution is stored as a uint8 .npy plus labels.

Keyed by everything that changes the result (source, root, file list fingerprint,
preprocessing, generator parameters), so a changed source or transform never
reuses stale pixels. Entries are written to a temporary folder and renamed into
place, so a killed process never leaves a half-written cache behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..io import default_cache_dir
from .base import FaceDataset

__all__ = ["cached_dataset", "cache_key", "default_cache_dir"]

CACHE_FORMAT = 3  # 2: resizes one axis at a time, width first (preprocessing.to_uint8);
# 3: transparency composited over white (preprocessing.on_white)


def cache_key(parts: dict) -> str:
    blob = json.dumps({"format": CACHE_FORMAT, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def cached_dataset(
    parts: dict, build: Callable[[], FaceDataset], cache_dir: Path | None = None
) -> FaceDataset:
    """Return the cached dataset for `parts`, building and storing it on a miss.

    cache_dir=None uses default_cache_dir(); pass enabled=False in parts' caller
    (i.e. call build() directly) to bypass caching entirely.
    """
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    entry = root / cache_key(parts)
    if (entry / "meta.json").is_file():
        try:
            return _read(entry)
        except (OSError, ValueError, KeyError):
            shutil.rmtree(entry, ignore_errors=True)  # damaged entry: rebuild below
    ds = build()
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
        _write(tmp, ds, parts)
        try:
            os.replace(tmp, entry)
        except OSError:  # another process won the race; its entry is equivalent
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError:
        pass  # an unwritable cache only costs speed
    return ds


def _write(folder: Path, ds: FaceDataset, parts: dict) -> None:
    np.save(folder / "images.npy", ds.images)
    np.savez(
        folder / "labels.npz",
        attributes=ds.attributes,
        identities=ds.identities,
        partitions=ds.partitions,
    )
    meta = {
        "parts": parts,
        "attribute_names": ds.attribute_names,
        "files": ds.files,
        "source": ds.source,
        "skipped": ds.skipped,
    }
    (folder / "meta.json").write_text(json.dumps(meta, default=str))


def _read(folder: Path) -> FaceDataset:
    meta = json.loads((folder / "meta.json").read_text())
    images = np.load(folder / "images.npy", mmap_mode="r")
    labels = np.load(folder / "labels.npz")
    return FaceDataset(
        images=np.asarray(images),
        attributes=labels["attributes"],
        attribute_names=meta["attribute_names"],
        identities=labels["identities"],
        files=meta["files"],
        partitions=labels["partitions"],
        source=meta["source"],
        skipped=meta.get("skipped", []),
    )
