"""File-based data sources (celeba, lfw, folder) on tiny generated fixtures in the official
formats, plus checks on the real CelebA subsets in ../shared/data when they are present."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepobfuscator.data import _annotations
from deepobfuscator.data.base import NO_IDENTITY, NO_PARTITION, DataError, Preprocess
from deepobfuscator.data.celeba import load_celeba
from deepobfuscator.data.factory import load_source, source_kinds
from deepobfuscator.data.folder import load_folder
from deepobfuscator.data.lfw import load_lfw

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PRE = Preprocess(size=(32, 32))
ATTRS = ["Male", "Smiling", "Young"]


def write_image(path: Path, size: tuple[int, int] = (30, 40), seed: int = 0) -> None:
    """Random RGB image of size (width, height); format from the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def assert_images_match_files(ds, image_dir: Path) -> None:
    """Each row holds the pixels of the file it names (alignment survives filtering/skips)."""
    for img, f in zip(ds.images, ds.files, strict=True):
        with Image.open(image_dir / f) as raw:
            np.testing.assert_array_equal(img, PRE.apply(raw))


def write_lines(path: Path, lines: list[str], newline: str = "\r\n") -> None:
    path.write_bytes("".join(line + newline for line in lines).encode())


# ----------------------------------------------------------------------------- CelebA


def make_celeba(root: Path, n: int = 6, identities: bool = True) -> dict:
    labels = np.random.default_rng(1).choice([-1, 1], size=(n, len(ATTRS)))
    files = [f"{i + 1:06d}.jpg" for i in range(n)]
    for i, f in enumerate(files):
        write_image(root / "img_align_celeba" / f, seed=i)
    # the official files: count line, header with a trailing space, rows padded to width 2, CRLF
    rows = [
        f + " " + " ".join(f"{v:2d}" for v in lab) for f, lab in zip(files, labels, strict=True)
    ]
    write_lines(root / "list_attr_celeba.txt", [str(n), " ".join(ATTRS) + " ", *rows])
    write_lines(root / "list_eval_partition.txt", [f"{f} {i % 3}" for i, f in enumerate(files)])
    ids = [100 + i // 2 for i in range(n)]
    if identities:
        write_lines(
            root / "identity_CelebA.txt", [f"{f} {d}" for f, d in zip(files, ids, strict=True)]
        )
    return {"files": files, "labels": (labels > 0).astype(np.int8), "ids": ids}


def test_celeba_parses_official_format(tmp_path: Path) -> None:
    truth = make_celeba(tmp_path / "celeba")
    ds = load_celeba(tmp_path / "celeba", PRE, cache_dir=tmp_path / "cache")
    assert ds.images.shape == (6, 32, 32, 3) and ds.images.dtype == np.uint8
    assert ds.attribute_names == ATTRS
    assert ds.attributes.dtype == np.int8
    np.testing.assert_array_equal(ds.attributes, truth["labels"])  # -1 -> 0, 1 -> 1
    np.testing.assert_array_equal(ds.identities, truth["ids"])
    np.testing.assert_array_equal(ds.partitions, [0, 1, 2, 0, 1, 2])
    assert ds.files == truth["files"] and ds.source == "celeba" and ds.has_identities
    np.testing.assert_array_equal(ds.attribute("Smiling"), truth["labels"][:, 1])


def test_celeba_partition_filter_and_no_identity_file(tmp_path: Path) -> None:
    truth = make_celeba(tmp_path, identities=False)
    ds = load_celeba(tmp_path, PRE, partitions=[1, 2], cache_dir=tmp_path / "cache")
    assert ds.files == [truth["files"][i] for i in (1, 2, 4, 5)]
    assert set(ds.partitions.tolist()) == {1, 2}
    assert (ds.identities == NO_IDENTITY).all() and not ds.has_identities
    assert_images_match_files(ds, tmp_path / "img_align_celeba")
    with pytest.raises(DataError, match="partitions"):
        load_celeba(tmp_path, PRE, partitions=[3], use_cache=False)


def test_celeba_missing_root_and_annotation_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="CelebA root not found"):
        load_celeba(tmp_path / "nowhere", PRE, use_cache=False)
    make_celeba(tmp_path)
    (tmp_path / "list_eval_partition.txt").unlink()
    with pytest.raises(DataError, match="list_eval_partition.txt"):
        load_celeba(tmp_path, PRE, use_cache=False)


@pytest.mark.parametrize(
    "row, message",
    [
        ("000002.jpg  1 -1", r"line 4: expected 4 columns"),
        ("000002.jpg  1 -1  2", r"line 4, column 'Young': expected a binary label"),
    ],
)
def test_celeba_malformed_row(tmp_path: Path, row: str, message: str) -> None:
    make_celeba(tmp_path)
    lines = (tmp_path / "list_attr_celeba.txt").read_text().splitlines()
    lines[3] = row
    write_lines(tmp_path / "list_attr_celeba.txt", lines)
    with pytest.raises(DataError, match=message) as err:
        load_celeba(tmp_path, PRE, use_cache=False)
    assert "list_attr_celeba.txt" in str(err.value)


def test_celeba_image_without_partition_row(tmp_path: Path) -> None:
    make_celeba(tmp_path)
    lines = (tmp_path / "list_eval_partition.txt").read_text().splitlines()
    write_lines(tmp_path / "list_eval_partition.txt", lines[1:])
    with pytest.raises(DataError, match=r"list_eval_partition.txt: 1 image.*000001\.jpg"):
        load_celeba(tmp_path, PRE, use_cache=False)


def test_celeba_missing_and_corrupt_images(tmp_path: Path) -> None:
    make_celeba(tmp_path)
    (tmp_path / "img_align_celeba" / "000003.jpg").unlink()
    with pytest.raises(DataError, match=r"000003\.jpg listed in .*list_attr_celeba.txt line 5"):
        load_celeba(tmp_path, PRE, use_cache=False)
    (tmp_path / "img_align_celeba" / "000005.jpg").write_bytes(b"not a jpeg at all")
    ds = load_celeba(tmp_path, PRE, on_bad_image="skip", cache_dir=tmp_path / "cache")
    assert len(ds) == 4 and ds.skipped == ["000003.jpg", "000005.jpg"]
    assert "000005.jpg" not in ds.files and len(ds.attributes) == len(ds.identities) == 4
    assert_images_match_files(ds, tmp_path / "img_align_celeba")
    write_image(tmp_path / "img_align_celeba" / "000003.jpg")
    with pytest.raises(DataError, match=r"corrupt or unreadable image: .*000005\.jpg"):
        load_celeba(tmp_path, PRE, use_cache=False)


def test_unknown_attribute_lists_valid_names(tmp_path: Path) -> None:
    make_celeba(tmp_path)
    ds = load_celeba(tmp_path, PRE, use_cache=False)
    with pytest.raises(DataError, match=r"'Nope'.*valid names: Male, Smiling, Young"):
        ds.attribute("Nope")


def test_cache_hit_skips_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_celeba(tmp_path / "data")
    first = load_celeba(tmp_path / "data", PRE, partitions=[0], cache_dir=tmp_path / "cache")

    def fail(*args, **kwargs):
        raise AssertionError("images decoded again despite a cache hit")

    monkeypatch.setattr(_annotations, "load_images", fail)
    again = load_celeba(tmp_path / "data", PRE, partitions=[0], cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(again.images, first.images)
    np.testing.assert_array_equal(again.attributes, first.attributes)
    np.testing.assert_array_equal(again.identities, first.identities)
    np.testing.assert_array_equal(again.partitions, first.partitions)
    assert again.files == first.files and again.attribute_names == first.attribute_names
    with pytest.raises(AssertionError):  # other settings are a different entry
        load_celeba(tmp_path / "data", PRE, partitions=[1], cache_dir=tmp_path / "cache")


# ----------------------------------------------------------------------------- crop & size


def test_square_crop_vs_none_on_non_square_images(tmp_path: Path) -> None:
    """A 60x20 image, red outer thirds and blue centre: 'square' keeps only the centre."""
    pixels = np.zeros((20, 60, 3), dtype=np.uint8)
    pixels[:, :20, 0] = pixels[:, 40:, 0] = 255
    pixels[:, 20:40, 2] = 255
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    (tmp_path / "labels.csv").write_text("file,Male\nwide.png,1\n")
    size = (24, 16)  # non-square output, (height, width)
    kw = dict(use_cache=False)
    sq = load_folder(tmp_path, tmp_path / "labels.csv", Preprocess(size, crop="square"), **kw)
    full = load_folder(tmp_path, tmp_path / "labels.csv", Preprocess(size, crop="none"), **kw)
    assert sq.images.shape == full.images.shape == (1, 24, 16, 3)
    assert (sq.images[0, :, :, 2] > 200).all() and (sq.images[0, :, :, 0] < 50).all()
    assert full.images[0, 12, 0, 0] > 200 and full.images[0, 12, 8, 2] > 200


# ----------------------------------------------------------------------------- LFW

LFW_HEADER = "#\tperson\timagenum\tMale\tWearing Hat\tSmiling"


def make_lfw(base: Path, header: str = LFW_HEADER) -> Path:
    """base/lfw/<Name>/<Name>_000k.jpg and base/lfw_attributes.txt (no row for Bob Smith)."""
    people = ["Zoe_Ball", "Zoe_Ball", "Aaron_Eckhart", "Bob_Smith"]
    numbers = [1, 2, 1, 1]
    for i, (name, num) in enumerate(zip(people, numbers, strict=True)):
        write_image(base / "lfw" / name / f"{name}_{num:04d}.jpg", size=(50, 50), seed=i)
    rows = [
        "# LFW attributes file, Kumar et al.",
        header,
        "Aaron Eckhart\t1\t1.56835\t-1.88904\t0.3",
        "Zoe Ball\t1\t-0.5\t2.1\t-0.01",
        "Zoe Ball\t2\t-1.2\t-0.3\t1.7",
        "Not On Disk\t1\t1\t1\t1",
    ]
    write_lines(base / "lfw_attributes.txt", rows, newline="\n")
    return base


def test_lfw_attributes_identities_and_skips(tmp_path: Path) -> None:
    ds = load_lfw(make_lfw(tmp_path), PRE, cache_dir=tmp_path / "cache")  # parent of lfw/
    assert ds.attribute_names == ["Male", "Wearing_Hat", "Smiling"]
    assert ds.files == [
        "Aaron_Eckhart/Aaron_Eckhart_0001.jpg",
        "Zoe_Ball/Zoe_Ball_0001.jpg",
        "Zoe_Ball/Zoe_Ball_0002.jpg",
    ]
    np.testing.assert_array_equal(ds.attributes, [[1, 0, 1], [0, 1, 0], [0, 0, 1]])  # sign
    # ids by sorted folder name over all people: Aaron 0, Bob 1, Zoe 2
    np.testing.assert_array_equal(ds.identities, [0, 2, 2])
    assert (ds.partitions == NO_PARTITION).all() and ds.images.shape == (3, 32, 32, 3)
    assert ds.skipped == ["Bob_Smith/Bob_Smith_0001.jpg"]
    assert_images_match_files(ds, tmp_path / "lfw")


def test_lfw_header_variant_and_explicit_file(tmp_path: Path) -> None:
    make_lfw(tmp_path, header=LFW_HEADER.replace("#\t", "#"))
    attrs = tmp_path / "lfw_attributes.txt"
    ds = load_lfw(tmp_path / "lfw", PRE, attributes_file=attrs, use_cache=False)
    assert len(ds) == 3 and ds.attribute_names[1] == "Wearing_Hat"


def test_lfw_without_attributes_file(tmp_path: Path) -> None:
    make_lfw(tmp_path)
    (tmp_path / "lfw_attributes.txt").unlink()
    ds = load_lfw(tmp_path / "lfw", PRE, use_cache=False)
    assert ds.attribute_names == [] and ds.attributes.shape == (4, 0)
    np.testing.assert_array_equal(ds.identities, [0, 1, 2, 2])
    with pytest.raises(DataError, match="LFW attributes file not found"):
        load_lfw(tmp_path, PRE, attributes_file=tmp_path / "missing.txt", use_cache=False)


def test_lfw_bad_score(tmp_path: Path) -> None:
    make_lfw(tmp_path)
    text = (tmp_path / "lfw_attributes.txt").read_text().replace("2.1", "high")
    (tmp_path / "lfw_attributes.txt").write_text(text)
    with pytest.raises(DataError, match=r"lfw_attributes.txt line 4: .*'high'"):
        load_lfw(tmp_path, PRE, use_cache=False)


# ----------------------------------------------------------------------------- folder + CSV


def make_folder(root: Path, rows: list[list[str]] | None = None) -> Path:
    rows = rows or [
        ["faces/a.png", "1", "-1", "carol", "0"],
        ["faces/b.jpg", "-1", "1", "alice", "2"],
        ["c.jpg", "0", "1", "carol", "1"],
    ]
    for i, r in enumerate(rows):
        write_image(root / r[0], size=(40, 30), seed=i)
    with open(root / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([["file", "Male", "Smiling", "person", "partition"], *rows])
    return root / "labels.csv"


def test_folder_csv(tmp_path: Path) -> None:
    csv_path = make_folder(tmp_path)
    ds = load_folder(tmp_path, csv_path, PRE, identity_column="person", cache_dir=tmp_path / "c")
    assert ds.files == ["faces/a.png", "faces/b.jpg", "c.jpg"] and ds.source == "folder"
    assert ds.attribute_names == ["Male", "Smiling"]
    np.testing.assert_array_equal(ds.attributes, [[1, 0], [0, 1], [0, 1]])
    np.testing.assert_array_equal(ds.identities, [1, 0, 1])  # alice 0, carol 1
    np.testing.assert_array_equal(ds.partitions, [0, 2, 1])
    # without identity_column, "person" is read as an attribute and its strings are rejected
    with pytest.raises(DataError, match=r"column 'person': expected a binary label"):
        load_folder(tmp_path, csv_path, PRE, use_cache=False)


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="label CSV not found"):
        load_folder(tmp_path, tmp_path / "none.csv", PRE, use_cache=False)
    csv_path = make_folder(
        tmp_path, [["a.png", "1", "0", "x", "0"], ["b.png", "1", "maybe", "y", "1"]]
    )
    with pytest.raises(DataError, match=r"no column 'path'; columns present: \['file', 'Male'"):
        load_folder(tmp_path, csv_path, PRE, file_column="path", use_cache=False)
    with pytest.raises(DataError, match=r"labels.csv line 3, column 'Smiling'.*'maybe'"):
        load_folder(tmp_path, csv_path, PRE, identity_column="person", use_cache=False)


def test_folder_missing_and_corrupt_images(tmp_path: Path) -> None:
    csv_path = make_folder(tmp_path)
    (tmp_path / "faces" / "b.jpg").unlink()
    with pytest.raises(DataError, match=r"faces/b\.jpg listed in .*labels.csv line 3"):
        load_folder(tmp_path, csv_path, PRE, identity_column="person", use_cache=False)
    (tmp_path / "faces" / "b.jpg").write_bytes(b"\xff\xd8garbage")
    with pytest.raises(DataError, match=r"corrupt or unreadable image: .*b\.jpg"):
        load_folder(tmp_path, csv_path, PRE, identity_column="person", use_cache=False)
    kw = dict(identity_column="person", on_bad_image="skip", use_cache=False)
    ds = load_folder(tmp_path, csv_path, PRE, **kw)
    assert ds.files == ["faces/a.png", "c.jpg"] and ds.skipped == ["faces/b.jpg"]
    assert_images_match_files(ds, tmp_path)
    np.testing.assert_array_equal(ds.partitions, [0, 1])


# ----------------------------------------------------------------------------- real subsets

needs_shared = pytest.mark.skipif(
    not (SHARED / "celeba").is_dir(), reason=f"real CelebA subsets not found at {SHARED}"
)


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("celeba-cache")


@needs_shared
def test_real_celeba_subset(shared_cache: Path) -> None:
    pre = Preprocess(size=(64, 64))
    full = load_celeba(SHARED / "celeba", pre, cache_dir=shared_cache)
    assert full.images.shape == (6000, 64, 64, 3) and len(full.attribute_names) == 40
    assert full.has_identities and len(np.unique(full.identities)) == 200
    assert abs(full.attribute("Male").mean() - 0.29) < 0.02
    assert np.bincount(full.partitions).tolist() == [4560, 780, 660]
    test = load_celeba(SHARED / "celeba", pre, partitions=[1, 2], cache_dir=shared_cache)
    assert len(test) == 1440 and set(test.partitions.tolist()) == {1, 2}
    assert not set(test.identities.tolist()) & set(full.identities[full.partitions == 0].tolist())


@needs_shared
def test_real_celeba_89x109(shared_cache: Path) -> None:
    if not (SHARED / "celeba-89x109").is_dir():
        pytest.skip(f"{SHARED / 'celeba-89x109'} not found")
    ds = load_celeba(SHARED / "celeba-89x109", Preprocess(size=(64, 64)), cache_dir=shared_cache)
    assert ds.images.shape == (10000, 64, 64, 3) and ds.files[0] == "000001.jpg"
    assert (ds.partitions == 0).all() and len(np.unique(ds.identities)) == 5429


@pytest.mark.skipif(not (SHARED / "lfw").is_dir(), reason=f"shared LFW not found at {SHARED}")
def test_lfw_protocol_is_identity_disjoint_with_repeat_people_on_both_attack_sides(
        shared_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from deepobfuscator.config import load_config
    from deepobfuscator.data.splits import make_splits

    monkeypatch.setenv("DEEPOBFUSCATOR_CACHE", str(shared_cache))
    repo = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(repo)
    cfg = load_config("configs/lfw-shared.yaml", ["data.image_size=[32,32]"])
    assert cfg.data.crop == "center:0.4" and cfg.data.private == ["Male", "Youth"]
    roles = make_splits(cfg)
    assert sum(len(r) for r in roles.values()) == 4189  # every photo with attributes
    people = {name: set(r.identities.tolist()) for name, r in roles.items()}
    names = list(people)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not people[a] & people[b], (a, b)
    for side in ("attacker", "test"):
        _, counts = np.unique(roles[side].identities, return_counts=True)
        assert (counts >= 2).sum() >= 50, side
    assert len(roles["test"]) == 791 and len(people["test"]) == 410  # seed 0, as documented
    again = make_splits(cfg)
    assert all(again[r].files == roles[r].files for r in roles)  # seeded: the same cut
    other = make_splits(load_config("configs/lfw-shared.yaml",
                                    ["data.image_size=[32,32]", "seed=1"]))
    assert other["test"].files != roles["test"].files


# -- the source registry -------------------------------------------------------------------


def test_the_config_accepts_exactly_the_registered_sources():
    from deepobfuscator.config import ConfigError, load_config

    assert list(source_kinds()) == ["synthfaces", "celeba", "lfw", "folder"]
    for name in source_kinds():
        assert load_config("cpu", [f"data.source={name}"]).data.source == name
    with pytest.raises(ConfigError, match="data.source='nope' is not valid; choose one of"):
        load_config("cpu", ["data.source=nope"])


@pytest.mark.parametrize("name", list(source_kinds()))
def test_every_registered_source_says_what_it_is_missing(name, tmp_path):
    from deepobfuscator.config import DataConfig

    kind = source_kinds()[name]
    if not kind.needs_root:
        ds = load_source(DataConfig(source=name, synth_images=40, image_size=(32, 32)))
        assert len(ds) == 40 and ds.images.shape[1:3] == (32, 32)
        return
    with pytest.raises(DataError, match="needs a folder: set data.root"):
        load_source(DataConfig(source=name, root=""))
    with pytest.raises(DataError, match="data folder not found"):
        load_source(DataConfig(source=name, root=str(tmp_path / "nowhere")))
    if kind.needs_csv:
        with pytest.raises(DataError, match="needs a CSV: set data.csv"):
            load_source(DataConfig(source=name, root=str(tmp_path)))
