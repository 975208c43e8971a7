"""Any image folder plus a CSV of labels: the way to bring your own data.

The CSV has a file column (paths relative to the folder), binary attribute columns
(0/1 or -1/1), optionally an identity column (any strings) and a "partition" column
(0 train, 1 val, 2 test). Every other column is an attribute.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np

from ._annotations import (
    binary_table,
    decode,
    int_column,
    maybe_cached,
    require_dir,
    stable_ids,
    stamp,
)
from .base import NO_IDENTITY, NO_PARTITION, DataError, FaceDataset, Preprocess
from .factory import SourceRequest, register_source

PARTITION_COLUMN = "partition"


def load_folder(
    root: Path,
    csv_path: Path,
    preprocess: Preprocess,
    file_column: str = "file",
    identity_column: str | None = None,
    on_bad_image: str = "error",
    cache_dir: Path | None = None,
    use_cache: bool = True,
) -> FaceDataset:
    """Load the images listed in `csv_path` (paths relative to `root`) with their labels."""
    root = require_dir(Path(root).expanduser(), "image folder", "set data.root to the folder")
    csv_path = Path(csv_path).expanduser()
    if not csv_path.is_file():
        raise DataError(
            f"label CSV not found: {csv_path}; set data.csv to a CSV with a {file_column!r} "
            "column and one 0/1 column per attribute"
        )
    parts = {
        "source": "folder",
        "root": str(root.resolve()),
        "root_stamp": stamp(root),  # changes when images are added or removed at the top level
        "csv": [str(csv_path.resolve()), stamp(csv_path)],
        "file_column": file_column,
        "identity_column": identity_column,
        "preprocess": preprocess.to_dict(),
        "on_bad_image": on_bad_image,
    }

    def build() -> FaceDataset:
        header, linenos, rows = _read_csv(csv_path, file_column, identity_column)

        def where(i: int) -> str:
            return f"{csv_path} line {linenos[i]}"

        def column(name: str) -> list[str]:
            j = header.index(name)
            return [r[j] for r in rows]

        files = column(file_column)
        empty = [i for i, f in enumerate(files) if not f]
        if empty:
            raise DataError(f"{where(empty[0])}: empty {file_column!r}; give the image path")
        dup = [f for f, n in Counter(files).items() if n > 1]
        if dup:
            raise DataError(f"{csv_path}: {dup[0]} is listed more than once; keep one row each")
        names = [c for c in header if c not in (file_column, identity_column, PARTITION_COLUMN)]
        idx = [header.index(c) for c in names]
        attributes = binary_table([[r[j] for j in idx] for r in rows], names, where, classes=True)
        if identity_column:
            identities = stable_ids(column(identity_column))
        else:
            identities = np.full(len(rows), NO_IDENTITY, dtype=np.int64)
        if PARTITION_COLUMN in header:
            values = column(PARTITION_COLUMN)
            partitions = int_column(values, where, PARTITION_COLUMN, valid={0, 1, 2})
        else:
            partitions = np.full(len(rows), NO_PARTITION, dtype=np.int64)
        return decode(
            "folder",
            root,
            files,
            where,
            attributes,
            names,
            identities,
            partitions,
            preprocess,
            on_bad_image,
        )

    return maybe_cached(parts, build, cache_dir, use_cache)


def _read_csv(
    path: Path, file_column: str, identity_column: str | None
) -> tuple[list[str], list[int], list[list[str]]]:
    """(header, line number per row, rows) with cells stripped and blank rows dropped."""
    # utf-8-sig: spreadsheets often prepend a byte-order mark to the first column name
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [c.strip() for c in next(reader, [])]
        for col, setting in (
            (file_column, "data.file_column"),
            (identity_column, "data.identity_column"),
        ):
            if col and col not in header:
                raise DataError(
                    f"{path}: no column {col!r}; columns present: {header}; "
                    f"rename the column or set {setting}"
                )
        dup = [c for c, n in Counter(header).items() if n > 1]
        if dup:
            raise DataError(f"{path} line 1: column {dup[0]!r} appears twice; rename one")
        linenos, rows = [], []
        for row in reader:
            if not any(c.strip() for c in row):
                continue
            if len(row) != len(header):
                raise DataError(
                    f"{path} line {reader.line_num}: expected {len(header)} cells "
                    f"({', '.join(header)}), got {len(row)}; fix that row"
                )
            linenos.append(reader.line_num)
            rows.append([c.strip() for c in row])
    if not rows:
        raise DataError(f"{path}: no data rows; add one row per image")
    return header, linenos, rows


@register_source("folder", needs_csv="columns: file, attribute columns, optional identity "
                 "column; see docs/data.md")
def _from_request(req: SourceRequest) -> FaceDataset:
    assert req.root is not None and req.csv is not None
    d = req.data
    return load_folder(req.root, req.csv, req.preprocess, file_column=d.file_column,
                       identity_column=d.identity_column or None, **req.decode)
