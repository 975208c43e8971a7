"""The export folder and its manifest: what a phone and a server need to agree on.

    EXPORT/obfuscator.onnx   the device part: image (N, 3, H, W) float32 in [0, 1] -> features
    EXPORT/classifier.onnx   the cloud part: features -> task probability (N,), or with
                             several tasks (manifest `tasks`) probabilities (N, outputs)
    EXPORT/obfuscator.pte    optional: ExecuTorch + XNNPACK build of the obfuscator
    EXPORT/manifest.json     preprocessing, shapes, wire settings, SHA-256 of each model

Reading it needs no torch: the server and the client both call `load_export`,
which refuses a folder with a missing file or a model whose hash does not match.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..wire import DTYPES as WIRE_DTYPES
from ..wire import QUANT_CHANNEL, QUANT_NAMES
from ..wire import VERSION as WIRE_VERSION
from .keyed_noise import NOISE_KEYS

MANIFEST = "manifest.json"
FORMAT = "deepobfuscator-export"
# 2: both graphs carry the digest of the manifest's privacy settings (PRIVACY_KEY)
FORMAT_VERSION = 2
REQUIRED_MODELS = ("obfuscator", "classifier")
# the manifest's features fields that decide what the upload reveals: the device's noise
# and how it is drawn, the normalisation under the cap, which numbers are sent, the erasure
PRIVACY_FIELDS = ("shape", "noise_std", "noise_key", "normalization", "positions", "erased",
                  "defences")
# ONNX metadata key under which export stamps their digest into both graphs
PRIVACY_KEY = "deepobfuscator.privacy_sha256"


class ExportError(UserError):
    """An export that failed its checks, or an export folder that is incomplete or altered."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class ExportBundle:
    """A verified export folder."""

    root: Path
    manifest: dict

    def model_path(self, name: str) -> Path:
        return self.root / self.manifest["models"][name]["file"]

    @property
    def feature_shape(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.manifest["features"]["shape"])  # type: ignore[return-value]

    @property
    def preprocessing(self) -> dict:
        return self.manifest["input"]

    @property
    def single(self) -> bool:
        """One binary task (manifest `task`): classifier.onnx answers (N,), not (N, outputs)."""
        return "tasks" not in self.manifest

    @property
    def tasks(self) -> list[dict]:
        """Every task, in the order of classifier.onnx's outputs: name, kind ("binary" or
        "classes"), classes (multi-class), outputs [start, stop], threshold (binary). A
        single-task manifest's `task` becomes one binary entry."""
        if not self.single:
            return self.manifest["tasks"]
        return [{"name": self.manifest["task"]["name"], "kind": "binary", "outputs": [0, 1],
                 "threshold": self.threshold}]

    @property
    def task_names(self) -> list[str]:
        return [t["name"] for t in self.tasks]

    @property
    def outputs(self) -> int:
        """classifier.onnx's numbers per image (1 for a single task)."""
        return int(self.tasks[-1]["outputs"][1])

    @property
    def task(self) -> str:
        """The task's name; with several tasks, their names joined (for titles and logs)."""
        return ", ".join(self.task_names)

    @property
    def wire_dtype(self) -> str:
        return self.manifest["wire"]["dtype"]

    @property
    def wire_per_channel(self) -> bool:
        return self.manifest["wire"]["quantization"] == QUANT_NAMES[QUANT_CHANNEL]

    @property
    def noise_std(self) -> float:
        """Std of the Gaussian noise the device adds to the features (0: none)."""
        return float(self.manifest["features"].get("noise_std") or 0.0)

    @property
    def noise_key(self) -> str:
        """How the device draws that noise: "photo" (keyed to the photo by a secret kept on
        the device: a repeated photo carries the same noise) or "fresh" (new for every
        upload; what an export made before keyed noise, without the field, means)."""
        return str(self.manifest["features"].get("noise_key", "fresh"))

    @property
    def threshold(self) -> float:
        """The single task's threshold (several tasks: each binary entry has its own)."""
        return float(self.manifest.get("task", {}).get("threshold", 0.5))


def privacy_digest(features: dict) -> str:
    """SHA-256 of the privacy settings in a manifest's `features` (canonical JSON). Export
    stamps it into both graphs, whose own hashes the manifest holds: a privacy setting can
    change only together with the files' hashes."""
    settings = {k: features.get(k) for k in PRIVACY_FIELDS}
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _graph_shape(arg) -> list:
    return [d if isinstance(d, int) else None for d in (arg.shape or [])]


def check_graph(bundle: ExportBundle, name: str, session) -> None:
    """An onnxruntime session of the export's `name` model against the manifest, before any
    image is read: the privacy settings it was exported with (PRIVACY_KEY) and the shapes
    the manifest promises (input size, features, outputs). Refused in one line."""
    path = bundle.model_path(name)
    stamped = session.get_modelmeta().custom_metadata_map.get(PRIVACY_KEY)
    if stamped != privacy_digest(bundle.manifest["features"]):
        raise ExportError(
            f"{bundle.root / MANIFEST}: its privacy settings (features: "
            f"{', '.join(PRIVACY_FIELDS)}) are not the ones {path.name} was exported with: "
            "the manifest was edited. Export the run again; never edit these fields by hand")
    feats = list(bundle.feature_shape)
    h, w = (int(v) for v in bundle.preprocessing["size"])
    outs = [] if bundle.single else [bundle.outputs]  # per image: () or (outputs,)
    expected = {"obfuscator": (("input", "input.size", [3, h, w]),
                               ("output", "features.shape", feats)),
                "classifier": (("input", "features.shape", feats),
                               ("output", "tasks", outs))}[name]
    actual = (session.get_inputs()[0], session.get_outputs()[0])
    for (role, field, want), arg in zip(expected, actual, strict=True):
        got = _graph_shape(arg)[1:]  # the batch axis is dynamic
        if got != want:
            raise ExportError(f"{bundle.root / MANIFEST}: {field} gives {path.name} an {role} "
                              f"of {want} per image, but the graph's is {got}. Export the "
                              "run again")


def _is_int(v: object, lo: int = 1) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo


def _is_number(v: object) -> bool:
    import math

    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _crop_ok(v: object) -> bool:
    from ..preprocessing import parse_crop

    try:
        parse_crop(v)  # type: ignore[arg-type]
    except ValueError:
        return False
    return True


# (section, key, what is expected, check): every field that serve, classify or bench read
_FIELDS = [
    ("input", "size", "[height, width] of positive integers",
     lambda v: isinstance(v, list) and len(v) == 2 and all(_is_int(x) for x in v)),
    ("input", "crop", "square, none, center:F or center:Npx", _crop_ok),
    ("input", "resample", "a PIL filter name", lambda v: isinstance(v, str) and bool(v)),
    ("features", "shape", "[channels, height, width] of positive integers",
     lambda v: isinstance(v, list) and len(v) == 3 and all(_is_int(x) for x in v)),
    ("features", "noise_std", "a number >= 0 (or absent)",
     lambda v: v is None or (_is_number(v) and v >= 0)),
    ("features", "noise_key", " or ".join(map(repr, NOISE_KEYS)) + " (or absent)",
     lambda v: v in NOISE_KEYS),
    ("wire", "dtype", f"one of {sorted(WIRE_DTYPES)}", lambda v: v in WIRE_DTYPES),
    ("wire", "quantization", "a string", lambda v: isinstance(v, str)),
    ("task", "name", "the task attribute's name", lambda v: isinstance(v, str) and bool(v)),
    ("task", "threshold", "a number in (0, 1) (or absent)",
     lambda v: v is None or (_is_number(v) and 0 < v < 1)),
]
_OPTIONAL = {("features", "noise_std"), ("features", "noise_key"), ("task", "threshold")}


def _check_fields(manifest: dict, mpath: Path) -> None:
    """Each field a consumer reads has the type and range it needs: a damaged manifest
    fails here, in one line, not as a 500 on every request."""
    for section, key, expected, ok in _FIELDS:
        if section not in manifest:  # `task` of a multi-task manifest: _check_tasks
            continue
        present = key in manifest[section]
        if not present and (section, key) in _OPTIONAL:
            continue
        value = manifest[section].get(key)
        if not present or not ok(value):
            got = "missing" if not present else f"{value!r}"
            raise ExportError(f"{mpath}: manifest field {section}.{key} is {got}; expected "
                              f"{expected}. Export the run again")


def _check_tasks(manifest: dict, mpath: Path) -> None:
    """`tasks` (several tasks): a non-empty list of distinct names whose `outputs` tile
    classifier.onnx's output columns in order, K of them for K classes; or `task` alone."""
    if "tasks" not in manifest:
        if not isinstance(manifest.get("task"), dict):
            raise ExportError(f"{mpath}: manifest field 'task' (or 'tasks') missing or not an "
                              "object; export the run again")
        return
    if "task" in manifest:
        raise ExportError(f"{mpath}: manifest has both 'task' and 'tasks'; an export has "
                          "one of them (task: one binary task). Export the run again")
    tasks = manifest["tasks"]
    if not isinstance(tasks, list) or not tasks:
        raise ExportError(f"{mpath}: manifest field tasks is {tasks!r}; expected a non-empty "
                          "list of tasks. Export the run again")
    start, names = 0, set()
    for i, t in enumerate(tasks):
        where = f"{mpath}: manifest field tasks[{i}]"
        if not isinstance(t, dict) or not isinstance(t.get("name"), str) or not t["name"]:
            raise ExportError(f"{where} has no name; expected an object with name, kind and "
                              "outputs. Export the run again")
        if t["name"] in names:
            raise ExportError(f"{where} names task {t['name']!r} again; export the run again")
        names.add(t["name"])
        kind, classes = t.get("kind"), t.get("classes")
        if kind == "binary":
            width = 1
            threshold = t.get("threshold", 0.5)
            if not (_is_number(threshold) and 0 < threshold < 1):
                raise ExportError(f"{where}.threshold is {threshold!r}; expected a number in "
                                  "(0, 1). Export the run again")
        elif kind == "classes":
            if not (isinstance(classes, list) and len(classes) >= 2
                    and all(isinstance(c, str) and c for c in classes)
                    and len(set(classes)) == len(classes)):
                raise ExportError(f"{where}.classes is {classes!r}; expected at least two "
                                  "distinct class names. Export the run again")
            width = len(classes)
        else:
            raise ExportError(f"{where}.kind is {kind!r}; expected 'binary' or 'classes'. "
                              "Export the run again")
        if t.get("outputs") != [start, start + width]:
            raise ExportError(f"{where}.outputs is {t.get('outputs')!r}; expected "
                              f"{[start, start + width]} (the columns after the previous "
                              "task's, one per class). Export the run again")
        start += width


def _check_positions(manifest: dict, mpath: Path) -> None:
    """features.positions (a sparse upload, model.upload_positions): absent/null, or the
    flat indices of the sent numbers in the obfuscator's (C, H, W) map, one per feature."""
    pos = manifest["features"].get("positions")
    if pos is None:
        return
    shape = pos.get("of_shape") if isinstance(pos, dict) else None
    idx = pos.get("flat_indices") if isinstance(pos, dict) else None
    sent = 1
    for v in manifest["features"]["shape"]:
        sent *= v
    ok = (isinstance(shape, list) and len(shape) == 3 and all(_is_int(v) for v in shape)
          and isinstance(idx, list) and len(idx) == sent
          and all(_is_int(v, 0) and v < shape[0] * shape[1] * shape[2] for v in idx)
          and len(set(idx)) == len(idx))
    if not ok:
        raise ExportError(f"{mpath}: manifest field features.positions is malformed; expected "
                          "of_shape [C, H, W] and flat_indices: distinct indices into it, one "
                          "per feature. Export the run again")


def load_export(export_dir: str | Path, check_hashes: bool = True,
                pin: str | None = None) -> ExportBundle:
    """Open an export folder, checking that every file is there and every hash matches.

    pin: the SHA-256 of manifest.json that `export` printed (an app ships it inside itself):
    the model hashes catch corruption, the pin catches a different or edited export."""
    root = Path(export_dir)
    if not root.is_dir():
        raise ExportError(f"export folder not found: {root}; create it with "
                          "`deepobfuscator export RUN_DIR --out DIR`")
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise ExportError(f"{root}: {MANIFEST} is missing: the folder is incomplete; "
                          "export the run again")
    if pin is not None and (got := sha256_file(mpath)) != pin.strip().lower():
        raise ExportError(f"{mpath}: SHA-256 {got[:16]}... is not the pinned {pin[:16]}...: "
                          "this is not the export you pinned (edited or replaced)")
    try:
        manifest = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ExportError(f"{mpath}: not valid JSON ({exc}); export the run again") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ExportError(f"{mpath} is not a deepobfuscator export manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ExportError(f"{mpath}: export format version {manifest.get('format_version')} "
                          f"is not supported (this package reads {FORMAT_VERSION}); "
                          "export the run again with this version")
    for key in ("input", "features", "wire", "models"):
        if not isinstance(manifest.get(key), dict):
            raise ExportError(f"{mpath}: manifest field {key!r} missing or not an object; "
                              "export the run again")
    _check_tasks(manifest, mpath)
    _check_fields(manifest, mpath)
    _check_positions(manifest, mpath)
    wire_version = manifest["wire"].get("format_version")
    if wire_version != WIRE_VERSION:
        raise ExportError(f"{mpath}: the export speaks wire format version {wire_version}, this "
                          f"package speaks {WIRE_VERSION}; export the run again with this version")
    models = manifest["models"]
    for entry in models.values():
        if entry is None:
            continue  # an optional model that was not built
        if not (isinstance(entry, dict) and isinstance(entry.get("file"), str)
                and isinstance(entry.get("sha256"), str)
                and Path(entry["file"]).name == entry["file"]):
            raise ExportError(f"{mpath}: malformed model entry {entry!r} (a file name inside "
                              "the folder and its sha256 expected); export the run again")
        path = root / entry["file"]
        if not path.is_file():
            raise ExportError(f"{root}: model file {entry['file']} is missing (listed in "
                              f"{MANIFEST}); the folder is incomplete, export the run again")
        if check_hashes:
            digest = sha256_file(path)
            if digest != entry["sha256"]:
                raise ExportError(
                    f"{path}: SHA-256 {digest[:16]}... does not match the manifest's "
                    f"{entry['sha256'][:16]}...; the file was altered or replaced, export again")
    for name in REQUIRED_MODELS:
        if models.get(name) is None:
            raise ExportError(f"{mpath}: no {name} model listed; export the run again")
    return ExportBundle(root, manifest)
