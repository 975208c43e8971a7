"""Seeded, disjoint data roles: defender-train, defender-val, attacker and test.

The defender trains on its two splits; the attacker is assumed to own data of its
own (disjoint from the defender's); the test split is touched by nobody until the
final scores. Splits are by identity when identities are known, so that the same
person never sits on both sides, and they respect a source's official partition.
Any role loaded from a separate source is cleaned of file names the defender
uses (the same photo can sit in two folders at two resolutions).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config_schema import Config
from ..io import atomic_write_json
from ..tasks import task_set
from .base import NO_PARTITION, DataError, FaceDataset, check_attribute_names
from .factory import load_source

ROLES = ("defender_train", "defender_val", "attacker", "test")


def make_splits(cfg: Config) -> dict[str, FaceDataset]:
    """Load the configured sources and cut them into the four roles."""
    d = cfg.data
    main = load_source(d)
    if d.max_images and len(main) > d.max_images:
        main = main.subset(np.sort(np.random.default_rng(cfg.seed).permutation(len(main))
                                   [: d.max_images]))
    tasks = task_set(cfg)
    check_attribute_names([*tasks.attributes, *d.private], main.attribute_names, main.source)
    tasks.labels(main)  # a class group's overlaps, a column's classes: errors now, not later
    rng = np.random.default_rng(cfg.seed)
    roles = _split_main(main, cfg, rng, separate={"attacker": d.attacker is not None,
                                                  "test": d.test is not None})
    defender_files = set(roles["defender_train"].files) | set(roles["defender_val"].files)
    for name in ("attacker", "test"):
        spec = getattr(d, name)
        if spec is None:
            continue
        ds = load_source(d, role=spec)
        check_attribute_names([*tasks.attributes, *d.private], ds.attribute_names,
                              f"{name}: {ds.source}")
        tasks.labels(ds)
        keep = np.array([f not in defender_files for f in ds.files], dtype=bool)
        roles[name] = ds.subset(np.flatnonzero(keep))
    if d.attacker is not None and d.test is not None:
        test_files = set(roles["test"].files)
        keep = np.array([f not in test_files for f in roles["attacker"].files], dtype=bool)
        roles["attacker"] = roles["attacker"].subset(np.flatnonzero(keep))
    for name, ds in roles.items():
        if len(ds) == 0:
            raise DataError(f"the {name} split is empty; use more data or change the split "
                            "fractions (data.val_fraction, attacker_fraction, test_fraction)")
    return roles


def _split_main(main: FaceDataset, cfg: Config, rng: np.random.Generator,
                separate: dict[str, bool]) -> dict[str, FaceDataset]:
    d = cfg.data
    idx = np.arange(len(main))
    out: dict[str, np.ndarray] = {}
    has_partitions = bool((main.partitions != NO_PARTITION).any())
    if has_partitions:
        # Official partition: 1 = val, 2 = test; partition 0 is shared out below.
        if not separate["test"]:
            out["test"] = idx[main.partitions == 2]
        out["defender_val"] = idx[main.partitions == 1]
        pool = idx[main.partitions == 0]
        if len(out["defender_val"]) == 0:
            out.pop("defender_val")
    else:
        pool = idx
    fractions = {"test": d.test_fraction, "attacker": d.attacker_fraction,
                 "defender_val": d.val_fraction}
    wanted = [r for r in ("test", "attacker", "defender_val")
              if r not in out and not separate.get(r, False)]
    groups = main.identities[pool] if main.has_identities else np.arange(len(pool))
    unique = rng.permutation(np.unique(groups))
    start = 0
    for role in wanted:
        n = int(round(fractions[role] * len(unique)))
        if fractions[role] > 0:
            n = max(n, 1)
        chosen = set(unique[start:start + n].tolist())
        start += n
        out[role] = pool[np.isin(groups, list(chosen))]
    rest = set(unique[start:].tolist())
    out["defender_train"] = pool[np.isin(groups, list(rest))]
    for role in ("attacker", "test"):
        out.setdefault(role, np.array([], dtype=np.int64))  # filled from a separate source
    return {r: main.subset(np.sort(out[r])) for r in ROLES}


def write_splits(roles: dict[str, FaceDataset], folder: Path) -> None:
    """One JSON per role: its source and the file names, so anyone can rebuild it."""
    for name, ds in roles.items():
        atomic_write_json(folder / f"{name}.json", {
            "role": name, "source": ds.source, "count": len(ds),
            "identities": int(len(np.unique(ds.identities))) if ds.has_identities else None,
            "files": ds.files,
        })


def check_splits_match(roles: dict[str, FaceDataset], folder: Path) -> None:
    """On resume the data must be the data the run started with."""
    import json

    for name, ds in roles.items():
        path = folder / f"{name}.json"
        if not path.is_file():
            continue
        saved = json.loads(path.read_text())
        if saved.get("files") != ds.files:
            raise DataError(
                f"the {name} split differs from the one saved in {path}: the data changed "
                "since this run started; restore it or train into a new --out folder"
            )


def split_summary(roles: dict[str, FaceDataset], attributes: list[str]) -> dict:
    """Images, identities and each binary attribute's rate per role (run.json)."""
    summary = {}
    for name, ds in roles.items():
        entry = {"images": len(ds), "source": ds.source}
        if ds.has_identities:
            entry["identities"] = int(len(np.unique(ds.identities)))
        for attr in attributes:
            entry[f"{attr}_rate"] = round(float(ds.attribute(attr).mean()), 4)
        summary[name] = entry
    return summary
