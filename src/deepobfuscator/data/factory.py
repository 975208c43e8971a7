"""One front door to every data source: a config in, a FaceDataset out."""

from __future__ import annotations

from pathlib import Path

from ..config import DataConfig, RoleSource
from .base import DataError, FaceDataset, Preprocess

SOURCES = ("synthfaces", "celeba", "lfw", "folder")


def preprocess_from_config(data: DataConfig) -> Preprocess:
    h, w = data.image_size
    return Preprocess(size=(int(h), int(w)), crop=data.crop)


def load_source(
    data: DataConfig, role: RoleSource | None = None, partitions: list[int] | None = None
) -> FaceDataset:
    """Load the main source of `data`, or the per-role source `role` when given.

    Preprocessing (crop, resolution) always comes from `data`, so every role sees
    images prepared exactly as the phone will prepare them.
    """
    pre = preprocess_from_config(data)
    source = role.source if role else data.source
    root_str = role.root if role else data.root
    csv_str = role.csv if role else data.csv
    if role is not None and role.partitions is not None:
        partitions = role.partitions
    cache_dir = Path(data.cache_dir).expanduser() if data.cache_dir else None
    common = dict(on_bad_image=data.on_bad_image, cache_dir=cache_dir, use_cache=data.cache)
    if source == "synthfaces":
        from .synthfaces import load_synthfaces

        return load_synthfaces(
            n_images=data.synth_images, images_per_identity=data.synth_images_per_identity,
            size=pre.size, seed=data.synth_seed, cache_dir=cache_dir, use_cache=data.cache,
        )
    if source not in SOURCES:
        raise DataError(f"unknown data source {source!r}; valid sources: {', '.join(SOURCES)}")
    if not root_str:
        raise DataError(f"data source {source!r} needs a folder: set data.root=PATH "
                        "(or root: in the role's settings)")
    root = Path(root_str).expanduser()
    if not root.exists():
        raise DataError(f"data folder not found: {root} (set data.root to the dataset folder)")
    if source == "celeba":
        from .celeba import load_celeba

        return load_celeba(root, pre, partitions=partitions, **common)
    if source == "lfw":
        from .lfw import load_lfw

        attrs = Path(data.attributes_file).expanduser() if data.attributes_file else None
        return load_lfw(root, pre, attributes_file=attrs, **common)
    from .folder import load_folder

    if not csv_str:
        raise DataError("data source 'folder' needs a CSV: set data.csv=PATH (columns: "
                        f"{data.file_column}, attribute columns, optional identity column)")
    return load_folder(
        root, Path(csv_str).expanduser(), pre, file_column=data.file_column,
        identity_column=data.identity_column or None, **common,
    )
