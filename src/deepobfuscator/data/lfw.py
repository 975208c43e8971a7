"""Labeled Faces in the Wild: root/<Name>/<Name>_0001.jpg, attributes from Kumar et al.

Identities come from the folder names. Attributes come from lfw_attributes.txt
(tab separated: a comment line, a "#<tab>person<tab>imagenum<tab>Male..." header, then
one row of real-valued attribute scores per image; a positive score means present).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ._annotations import (
    IMAGE_SUFFIXES,
    decode,
    fingerprint,
    maybe_cached,
    read_lines,
    require_dir,
    split_rows,
    stable_ids,
    stamp,
)
from .base import NO_PARTITION, DataError, FaceDataset, Preprocess
from .factory import SourceRequest, register_source

ATTR_FILE = "lfw_attributes.txt"
LAYOUT = "expected the LFW folder (one sub-folder per person) or a folder containing lfw/"


def load_lfw(
    root: Path,
    preprocess: Preprocess,
    attributes_file: Path | None = None,
    on_bad_image: str = "error",
    cache_dir: Path | None = None,
    use_cache: bool = True,
) -> FaceDataset:
    """Load LFW; without an attributes file, identities only (attribute_names == [])."""
    root = require_dir(Path(root).expanduser(), "LFW root", LAYOUT)
    image_dir = root / "lfw" if (root / "lfw").is_dir() else root
    if attributes_file is None:
        found = [p / ATTR_FILE for p in (image_dir, image_dir.parent) if (p / ATTR_FILE).is_file()]
        attr_path = found[0] if found else None
    else:
        attr_path = Path(attributes_file).expanduser()
        if not attr_path.is_file():
            raise DataError(
                f"LFW attributes file not found: {attr_path}; download lfw_attributes.txt "
                "(Kumar et al.) or leave attributes_file unset to load identities only"
            )
    files = _scan(image_dir)
    if not files:
        raise DataError(f"no images found under {image_dir}; {LAYOUT}")
    parts = {
        "source": "lfw",
        "root": str(image_dir.resolve()),
        "files": fingerprint(files),  # the folder listing is the file list here
        "attributes_file": [str(attr_path.resolve()), stamp(attr_path)] if attr_path else None,
        "preprocess": preprocess.to_dict(),
        "on_bad_image": on_bad_image,
    }

    def build() -> FaceDataset:
        identities = stable_ids([f.split("/", 1)[0] for f in files])
        names: list[str]
        if attr_path is None:
            attributes, names, keep = np.zeros((len(files), 0), np.int8), [], files
        else:
            attributes, names, keep = _read_attributes(attr_path, files)
        row = {f: i for i, f in enumerate(files)}
        idx = [row[f] for f in keep]
        return decode(
            "lfw",
            image_dir,
            keep,
            lambda i: f"the folder listing of {image_dir}",
            attributes,
            names,
            identities[idx],
            np.full(len(keep), NO_PARTITION, dtype=np.int8),
            preprocess,
            on_bad_image,
            skipped=sorted(set(files) - set(keep)),
        )

    return maybe_cached(parts, build, cache_dir, use_cache)


def _scan(image_dir: Path) -> list[str]:
    """Sorted 'Name/Name_0001.jpg' paths of every image in a person sub-folder."""
    files = []
    for person in (e.name for e in os.scandir(image_dir) if e.is_dir()):
        for e in os.scandir(image_dir / person):
            if e.is_file() and e.name.lower().endswith(IMAGE_SUFFIXES):
                files.append(f"{person}/{e.name}")
    return sorted(files)


def _read_attributes(path: Path, files: list[str]) -> tuple[np.ndarray, list[str], list[str]]:
    """(attributes of the images that have a row, attribute names, those images' files)."""
    fix = "use Kumar et al.'s lfw_attributes.txt or pass attributes_file explicitly"
    # rstrip: a trailing tab would otherwise read as an extra, empty column
    lines = [ln.rstrip() for ln in read_lines(path, "LFW attributes file", fix)]
    # The header is the '#' line that names the columns ("#\tperson\t..." or "#person\t...").
    header = next(
        (i for i, ln in enumerate(lines) if ln.startswith("#") and _cells(ln)[:1] == ["person"]),
        None,
    )
    if header is None:
        raise DataError(f"{path}: no header line '#<tab>person<tab>imagenum<tab>...' found; {fix}")
    columns = _cells(lines[header])
    if columns[:2] != ["person", "imagenum"] or len(columns) < 3:
        raise DataError(
            f"{path} line {header + 1}: expected the columns person, imagenum, then attribute "
            f"names, got {columns[:4]}; {fix}"
        )
    names = [c.replace(" ", "_") for c in columns[2:]]
    linenos, rows = split_rows(
        path,
        lines,
        header + 1,
        len(columns),
        sep="\t",
        hint=" (person, imagenum, one score per attribute)",
    )
    present, seen = set(files), set()
    keep, scores = [], []
    for ln, (person, num, *values) in zip(linenos, rows, strict=True):
        try:
            name = person.replace(" ", "_")
            file = f"{name}/{name}_{int(num):04d}.jpg"
            vals = [float(v) for v in values]
        except ValueError as exc:
            raise DataError(
                f"{path} line {ln}: {exc}; expected an integer imagenum and "
                "one number per attribute"
            ) from None
        if file in seen:
            raise DataError(f"{path} line {ln}: second row for {file}; keep one row per image")
        seen.add(file)
        if file in present:  # rows of images not on disk are ignored: LFW subsets are fine
            keep.append(file)
            scores.append(vals)
    if not keep:
        raise DataError(f"{path}: none of its rows match an image on disk; check the LFW root")
    attributes = (np.array(scores, dtype=np.float64) > 0).astype(np.int8)
    # Keep the folder's sorted order, not the file's, so ids and order match the no-attribute case.
    order = np.argsort(keep, kind="stable")
    return attributes[order], names, [keep[i] for i in order]


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.lstrip("#").split("\t") if c.strip()]


@register_source("lfw")
def _from_request(req: SourceRequest) -> FaceDataset:
    assert req.root is not None
    attrs = Path(req.data.attributes_file).expanduser() if req.data.attributes_file else None
    return load_lfw(req.root, req.preprocess, attributes_file=attrs, **req.decode)
