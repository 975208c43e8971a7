"""One front door to every data source: a config in, a FaceDataset out.

Sources come in kinds with one interface: a loader that takes a `SourceRequest` (where
the data is and how to prepare it) and returns a FaceDataset, registered by name in
`SOURCES` (registry.py). A new source is one module with a `@register_source` loader (and,
for a built-in, its name in `BUILTIN` below); the config accepts the registered names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..registry import Registry
from .base import DataError, FaceDataset, Preprocess

if TYPE_CHECKING:
    from ..config_schema import DataConfig, RoleSource


@dataclass(frozen=True)
class SourceRequest:
    """What a loader gets: the data section, the folder (and CSV) of the role it loads,
    the partitions asked for, the preprocessing every role shares, the decode settings."""

    data: DataConfig
    root: Path | None
    csv: Path | None
    partitions: list[int] | None
    preprocess: Preprocess
    decode: dict = field(default_factory=dict)  # on_bad_image, cache_dir, use_cache


@dataclass(frozen=True)
class SourceKind:
    name: str
    load: Callable[[SourceRequest], FaceDataset]
    needs_root: bool  # a folder of images (data.root), or generated data
    needs_csv: str = ""  # why a CSV is required, when it is


BUILTIN = ("synthfaces", "celeba", "lfw", "folder")
SOURCES: Registry[SourceKind] = Registry(
    "data source", {name: f"{__package__}.{name}" for name in BUILTIN}, error=DataError)


def register_source(name: str, needs_root: bool = True, needs_csv: str = ""):
    def deco(fn: Callable[[SourceRequest], FaceDataset]) -> Callable[[SourceRequest],
                                                                      FaceDataset]:
        SOURCES.register(name, SourceKind(name, fn, needs_root, needs_csv))
        return fn

    return deco


def source_kinds() -> dict[str, SourceKind]:
    """The registry, with the built-in sources loaded (their modules import lazily: a
    source's dependencies are paid for only when it is used)."""
    return SOURCES.entries()


def preprocess_from_config(data: DataConfig) -> Preprocess:
    h, w = data.image_size
    return Preprocess(size=(int(h), int(w)), crop=data.crop, align=data.align)


def load_source(
    data: DataConfig, role: RoleSource | None = None, partitions: list[int] | None = None
) -> FaceDataset:
    """Load the main source of `data`, or the per-role source `role` when given.

    Preprocessing (crop, resolution) always comes from `data`, so every role sees
    images prepared exactly as the phone will prepare them.
    """
    name = role.source if role else data.source
    kind = SOURCES.lookup(name)
    root_str = role.root if role else data.root
    csv_str = role.csv if role else data.csv
    if role is not None and role.partitions is not None:
        partitions = role.partitions
    root = None
    if kind.needs_root:
        if not root_str:
            raise DataError(f"data source {name!r} needs a folder: set data.root=PATH "
                            "(or root: in the role's settings)")
        root = Path(root_str).expanduser()
        if not root.exists():
            raise DataError(f"data folder not found: {root} (set data.root to the dataset "
                            "folder)")
    if kind.needs_csv and not csv_str:
        raise DataError(f"data source {name!r} needs a CSV: set data.csv=PATH "
                        f"({kind.needs_csv})")
    cache_dir = Path(data.cache_dir).expanduser() if data.cache_dir else None
    return kind.load(SourceRequest(
        data=data, root=root, csv=Path(csv_str).expanduser() if csv_str else None,
        partitions=partitions, preprocess=preprocess_from_config(data),
        decode=dict(on_bad_image=data.on_bad_image, cache_dir=cache_dir,
                    use_cache=data.cache)))
