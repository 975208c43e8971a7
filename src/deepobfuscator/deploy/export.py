"""Export a trained run: two ONNX models and a manifest, parity-checked against PyTorch.

The parity check runs both ONNX models in onnxruntime on real images (the run's
test split; rendered synthfaces when the run's data is not on this machine) and
compares them with the PyTorch models they came from. Above the tolerance the
export fails and no manifest is written, so a folder that failed is never served.
"""

from __future__ import annotations

import os
import shutil
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import __version__, wire
from ..defences.base import manifest_entries
from ..io import atomic_write, atomic_write_bytes, atomic_write_json
from ..models.budget import phone_budget
from ..models.upload import PackUpload, UnpackUpload, kept_positions
from ..onnx_graphs import export_graph
from .keyed_noise import NOISE_KEYS
from .manifest import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    PRIVACY_KEY,
    ExportError,
    load_export,
    privacy_digest,
    sha256_file,
)

if TYPE_CHECKING:
    from ..tasks import TaskSet

__all__ = ["ExportError", "export_run", "load_export", "FEATURE_TOL", "PROB_TOL"]

# fp32 ONNX vs fp32 PyTorch differ only in summation order: ~1e-7 relative here.
FEATURE_TOL = 1e-4  # max abs difference, relative to max(1, max |torch features|)
PROB_TOL = 1e-4  # max abs difference of any task probability
PARITY_IMAGES = 32


EXPORT_FILES = (MANIFEST, "obfuscator.onnx", "classifier.onnx", "obfuscator.pte")


def export_run(run_dir: str | Path, out_dir: str | Path, wire_dtype: str = "int8",
               per_channel: bool = True, parity_images: int = PARITY_IMAGES,
               mobile: bool = True, force: bool = False, noise_key: str = "photo",
               threads: int = 0) -> Path:
    """Write obfuscator.onnx, classifier.onnx (+ obfuscator.pte) and manifest.json into out_dir.

    The export is built in a folder beside out_dir and swapped in only once complete and
    parity-checked, so a failed or killed export leaves the previous one as it was. A
    complete export already in out_dir is replaced only with force=True.
    mobile: also build the ExecuTorch .pte when executorch is installed (extra `[mobile]`).
    threads: CPU threads for PyTorch and the parity check's onnxruntime (0: the cores
    other processes leave free, as every command).
    noise_key (an obfuscator trained with feature noise): "photo", the device keys the
    noise to the photo (a repeated photo carries the same noise, so repeats cannot be
    averaged); "fresh", new noise for every upload.
    """
    from ..threads import use_threads

    use_threads(threads)  # a bad count is a one-line error before any work
    if noise_key not in NOISE_KEYS:
        raise ExportError(f"unknown noise key {noise_key!r}: use 'photo' (the same photo "
                          "always carries the same noise) or 'fresh' (new noise per upload)")
    if wire_dtype not in wire.DTYPES:
        raise ExportError(f"unknown wire dtype {wire_dtype!r}: use one of {sorted(wire.DTYPES)}")
    if parity_images < 1:
        raise ExportError(f"parity_images={parity_images}: the export is checked against "
                          "PyTorch on at least 1 image (default 32)")
    out = Path(out_dir)
    _check_target(out, force)
    from ..runs import load_run

    run_dir = Path(run_dir).resolve()
    cfg, models = load_run(run_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.partial-*"):  # left by a killed export
        shutil.rmtree(stale, ignore_errors=True)
    stage = out.parent / f".{out.name}.partial-{os.getpid()}"
    stage.mkdir()
    try:
        _write_export(cfg, models, run_dir, stage, wire_dtype, per_channel, parity_images,
                      mobile, noise_key)
        _swap_in(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return out


def _check_target(out: Path, force: bool) -> None:
    """Refuse to replace a complete export without force, and any folder holding files an
    export does not write (they are the user's)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ExportError(f"{out} is a file; choose an export folder for --out")
    foreign = sorted(p.name for p in out.iterdir()
                     if p.name not in EXPORT_FILES and not p.name.endswith(".tmp"))
    if foreign:
        raise ExportError(f"{out} holds files an export does not write ({', '.join(foreign[:5])}"
                          "); choose another --out or move them")
    if (out / MANIFEST).is_file() and not force:
        raise ExportError(f"{out} already holds an export; pass --force to replace it (the old "
                          "one stays in place until the new one is complete and parity-checked)")


def _swap_in(stage: Path, out: Path) -> None:
    """Replace out by the finished stage folder: two renames, the old export removed last."""
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        out.rename(old)
    stage.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def _write_export(cfg, models, run_dir: Path, out: Path, wire_dtype: str, per_channel: bool,
                  parity_images: int, mobile: bool, noise_key: str) -> None:
    import torch

    from ..data.factory import preprocess_from_config
    from ..models import feature_shape
    from ..runs import RunPaths, read_info
    from ..tasks import task_set

    tasks = task_set(cfg)
    encoder, noise_std = without_noise(models.encoder.float().eval())
    normalized = bool(getattr(models.encoder, "normalize", False))
    defences = manifest_entries(cfg, models.encoder)
    task = task_probability(models.classifier.float(), tasks).eval()
    c, h, w = feature_shape(cfg)
    positions = kept_positions(models.encoder)
    shape: tuple[int, ...] = (c, h, w)
    if positions is not None:  # a sparse upload: the phone packs, the cloud unpacks
        encoder = PackUpload(encoder, positions, shape).eval()
        task = UnpackUpload(task, positions, shape).eval()
        shape = (1, 1, len(positions))
    images, image_source = _parity_images(cfg, parity_images)

    t0 = time.perf_counter()
    _export_onnx(encoder, torch.from_numpy(images[:2]), out / "obfuscator.onnx", "image",
                 "features")
    _export_onnx(task, torch.zeros(2, *shape), out / "classifier.onnx", "features",
                 "probability" if tasks.single else "probabilities")
    parity = check_onnx_parity(out, encoder, task, images, tasks)
    parity["images"], parity["image_source"] = len(images), image_source
    pre = preprocess_from_config(cfg.data).to_dict()
    feat_elems = int(np.prod(shape))
    features = {"name": "features", "shape": list(shape), "dtype": "float32",
                "min": 0.0 if noise_std == 0 and not normalized else None,
                "noise_std": noise_std,
                # absent without noise: nothing to key (and absent means "fresh")
                **({"noise_key": noise_key} if noise_std > 0 else {}),
                "normalization": "unit_rms" if normalized else "none",
                "information_cap": _cap_note(normalized, noise_std, c * h * w,
                                             feat_elems, noise_key),
                "positions": None if positions is None else {
                    "of_shape": [c, h, w], "flat_indices": positions.tolist(),
                    "rule": "features hold the numbers at these C-order indices of "
                            "the obfuscator's (C, H, W) map; the rest are 0 and not "
                            "sent (model.upload_positions)"},
                "erased": next((e for e in defences if e["name"] == "erase"), None),
                # every stage between the VGG blocks and the wire, in order
                "defences": defences,
                "noise": _noise_note(noise_std, noise_key),
                "elements": feat_elems,
                "elements_vs_image": round(feat_elems / (3 * pre["size"][0]
                                                         * pre["size"][1]), 4)}
    for name in ("obfuscator", "classifier"):  # a privacy setting now moves the hashes
        stamp_privacy(out / f"{name}.onnx", privacy_digest(features))
    models_entry: dict[str, dict | None] = {
        name: _model_entry(out / f"{name}.onnx", "onnx") for name in ("obfuscator", "classifier")}
    alignment = None
    if pre.get("align", "none") != "none":  # the device finds the face with these graphs
        alignment = _ship_detector(out, models_entry)
    mobile_note = "not requested"
    if mobile:
        models_entry["obfuscator_pte"], mobile_note = _maybe_export_pte(encoder, images, out)
    info = read_info(run_dir)
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "package_version": __version__, "torch_version": torch.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "export_seconds": round(time.perf_counter() - t0, 2),
        "run": {"path": str(run_dir), "config_fingerprint": cfg.fingerprint(),
                "config_file": str(RunPaths(run_dir).config), "privacy_method":
                cfg.privacy.method, "final": info.get("final", {})},
        "input": {"name": "image", "size": pre["size"], "crop": pre["crop"],
                  "resample": pre["resample"], "value_range": pre["value_range"],
                  "channel_order": pre["channel_order"], "layout": "NCHW", "dtype": "float32",
                  "batch": "dynamic",
                  "rule": "RGB; crop=square: centre-crop the largest square, none: keep the "
                          "frame, center:F / center:Npx: centre-crop a square of side "
                          "floor(F x shorter side + 0.5) / min(N, shorter side) px; "
                          "resize to size=[height, width] with PIL's `resample` filter; "
                          "uint8 / 255 as float32; HWC -> CHW",
                  # data.align: absent when none (clients from before alignment read the
                  # export as before); otherwise what the device does before the crop
                  **({"align": pre["align"], "alignment": alignment} if alignment else {})},
        "features": features,
        "wire": {"format_version": wire.VERSION, "dtype": wire_dtype,
                 "quantization": wire.QUANT_NAMES[(wire.QUANT_CHANNEL if per_channel else
                                                   wire.QUANT_TENSOR)
                                                  if wire_dtype == "int8" else wire.QUANT_NONE],
                 "bytes_per_image": wire.encoded_size((1, *shape), wire_dtype, per_channel),
                 "image_bytes_uint8": 3 * pre["size"][0] * pre["size"][1]},
        **task_entries(tasks),
        "models": models_entry,
        # compute on each side and the upload per image: what the page shows a user
        "budget": phone_budget(cfg).to_dict(),
        "mobile": mobile_note,
        "parity": parity,
    }
    atomic_write_json(out / MANIFEST, manifest)
    for f in [out / MANIFEST, *(out / e["file"] for e in models_entry.values() if e)]:
        f.chmod(0o644)  # temp files are created 0600; an export is meant to be shipped
    load_export(out)  # what serve and classify will do: fail here, not there


def _ship_detector(out: Path, models_entry: dict) -> dict:
    """Copy the face detector's three graphs into the export (face_pnet.onnx, ...), listed
    and hashed with the models; returns the manifest's `input.alignment`."""
    from ..align import settings
    from ..align.nets import detector_graphs

    align = settings()
    for net, src in detector_graphs().items():
        name = align["graphs"][net]
        dst = out / f"{name}.onnx"
        atomic_write_bytes(dst, src.read_bytes())
        models_entry[name] = _model_entry(dst, "onnx")
    return align


def _noise_note(noise_std: float, noise_key: str) -> str:
    """The device's noise rule, in words: which noise, and how it is drawn."""
    if noise_std == 0:
        return "none"
    rule = (f"the device adds Gaussian noise of std {noise_std} to every value of "
            "obfuscator.onnx's output before encoding (privacy.feature_noise; the classifier "
            "was trained with it), ")
    if noise_key == "photo":
        return rule + ("keyed to the photo (noise_key photo): drawn from HMAC-SHA256 of a "
                       "secret that never leaves the device and the uint8 model input, so "
                       "the same photo always carries the same noise and sending it again "
                       "tells the server nothing new (docs/deploy.md, keyed_noise.py)")
    return rule + ("drawn afresh from the OS's entropy for every upload (noise_key fresh): "
                   "the same photo sent N times can have its noise averaged away")


def _cap_note(normalized: bool, noise_std: float, elements: int, sent: int,
              noise_key: str = "photo") -> str:
    """The information cap, in words: part of the export's contract with the device."""
    from ..defences.cap import capacity_bits

    if not normalized:
        return "none"
    bits = capacity_bits(elements, noise_std, sent if sent < elements else 0)
    if bits is None:
        return "features scaled to unit RMS per image in obfuscator.onnx; no noise: no bound"
    repeats = ("the noise is keyed to the photo, so sending it again adds nothing"
               if noise_key == "photo" else "per upload: the noise is fresh, so a photo sent "
               "N times can give more")
    return (f"obfuscator.onnx scales each image's features to unit RMS and the device adds "
            f"noise of std {noise_std}: at most {bits:.1f} bits per image can reach the cloud "
            f"({repeats})")


def without_noise(encoder):
    """(a noise-free copy of the obfuscator, the std of its feature noise).

    An obfuscator trained with `privacy.feature_noise` adds Gaussian noise to every upload.
    The ONNX graph leaves it out (the parity check needs a deterministic model; random ops
    differ between runtimes; and onnxruntime's RandomNormalLike without a seed drew the
    same noise in every new session, 1.32.0 on 2026-12-04: noise in the graph would be
    predictable, so an attacker could subtract it) and the manifest's `features.noise_std`
    tells the device to add it, keyed to the photo by a secret only the device holds or
    fresh from the OS's entropy (`features.noise_key`); `DeviceObfuscator.features` does.
    """
    std = float(getattr(encoder, "noise_std", 0.0) or 0.0)
    if std == 0:
        return encoder, 0.0
    import copy

    quiet = copy.deepcopy(encoder)
    quiet.noise_std = 0.0
    return quiet.eval(), std


def task_entries(tasks: TaskSet) -> dict:
    """The manifest's answer to "what does classifier.onnx output".

    One binary task: `task`, exactly as every export before multi-task runs (old clients
    and servers read it). Otherwise `tasks`, one entry per task with its slice of the
    (N, outputs) probabilities, and no `task`: a package that predates `tasks` then
    refuses the export at load ("field 'task' missing") instead of misreading its output.
    """
    if tasks.single:
        name = tasks.tasks[0].name
        return {"task": {"name": name, "output": f"P({name} = 1), sigmoid of the "
                         "classifier's logit", "threshold": 0.5}}
    entries = []
    for d in tasks.describe():
        a, b = d["outputs"]
        if d["kind"] == "binary":
            d |= {"output": f"P({d['name']} = 1): the sigmoid of its logit, column {a}",
                  "threshold": 0.5}
        else:
            d["output"] = (f"P(class) for each of its {b - a} classes, in order: the softmax "
                           f"of its logits, columns {a} to {b - 1}")
        entries.append(d)
    return {"tasks": entries}


def task_probability(classifier, tasks: TaskSet | None = None):
    """The classifier with its output activations: the cloud model answers probabilities,
    not logits. One binary task (tasks None or single): P(yes) (N,), the sigmoid of the
    logit. Several: (N, tasks.outputs), each binary task's sigmoid and each multi-class
    task's softmax over its K logits, side by side in `tasks.slices` order."""
    import torch

    class TaskProbability(torch.nn.Module):
        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.net(z))

    class TaskProbabilities(torch.nn.Module):
        def __init__(self, net: torch.nn.Module, parts: list[tuple[int, int, bool]]) -> None:
            super().__init__()
            self.net, self.parts = net, parts

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            logits = self.net(z)
            return torch.cat([logits[:, a:b].sigmoid() if binary else logits[:, a:b].softmax(1)
                              for a, b, binary in self.parts], 1)

    if tasks is None or tasks.single:
        return TaskProbability(classifier)
    return TaskProbabilities(classifier, [(a, b, t.binary) for t, (a, b)
                                          in zip(tasks, tasks.slices, strict=True)])


def _export_onnx(module, example, path: Path, input_name: str, output_name: str) -> None:
    import torch

    export_graph(module, example, path, [input_name], [output_name],
                 {0: torch.export.Dim("batch", min=1, max=4096)})


def stamp_privacy(path: Path, digest: str) -> None:
    """The graph carries the digest of the manifest's privacy settings (manifest.
    PRIVACY_KEY): serve, classify and bench refuse a manifest edited away from it."""
    import onnx

    model = onnx.load(str(path))
    kept = [(p.key, p.value) for p in model.metadata_props if p.key != PRIVACY_KEY]
    del model.metadata_props[:]
    for key, value in [*kept, (PRIVACY_KEY, digest)]:
        model.metadata_props.add(key=key, value=value)
    atomic_write(path, lambda p: onnx.save(model, str(p)))


def check_onnx_parity(out: Path, encoder, task, images: np.ndarray,
                      tasks: TaskSet | None = None) -> dict:
    """Max abs differences onnxruntime vs PyTorch, over every output (every task's
    probabilities), at the parity batch and at batch 1; raises ExportError above tolerance.
    tasks (several tasks): also each task's own difference, under `per_task`."""
    import onnxruntime as ort
    import torch

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()  # export_run's --threads
    enc = ort.InferenceSession(str(out / "obfuscator.onnx"), opts,
                               providers=["CPUExecutionProvider"])
    cls = ort.InferenceSession(str(out / "classifier.onnx"), opts,
                               providers=["CPUExecutionProvider"])
    with torch.no_grad():
        z_t = encoder(torch.from_numpy(images)).numpy()
        p_t = task(torch.from_numpy(z_t)).numpy()
    z_o = enc.run(None, {"image": images})[0]
    z_1 = enc.run(None, {"image": images[:1]})[0]  # batch 1: the dynamic axis really is dynamic
    p_o = cls.run(None, {"features": z_t})[0]
    p_1 = cls.run(None, {"features": z_t[:1]})[0]
    if p_o.shape != p_t.shape or p_1.shape != p_t[:1].shape:  # numpy would broadcast them
        raise ExportError(f"ONNX parity check failed: classifier.onnx answers shape "
                          f"{list(p_o.shape)}, PyTorch {list(p_t.shape)}")
    scale = max(1.0, float(np.abs(z_t).max()))
    d_z = float(max(np.abs(z_o - z_t).max(), np.abs(z_1 - z_t[:1]).max()))
    diff = np.maximum(np.abs(p_o - p_t).max(0), np.abs(p_1 - p_t[:1]).max(0))  # per output
    d_p = float(diff.max())
    if not (d_z <= FEATURE_TOL * scale and d_p <= PROB_TOL):
        raise ExportError(
            f"ONNX parity check failed: features differ by {d_z:.3g} (tolerance "
            f"{FEATURE_TOL * scale:.3g}), probabilities by {d_p:.3g} (tolerance {PROB_TOL}); "
            "the exported models do not compute what the PyTorch models compute")
    res = {"features_max_abs_diff": d_z, "probability_max_abs_diff": d_p,
           "features_tolerance": FEATURE_TOL * scale, "probability_tolerance": PROB_TOL,
           "tolerance_rule": "features: 1e-4 * max(1, max|features|); probability: 1e-4"}
    if tasks is not None and not tasks.single:
        res["per_task"] = {t.name: float(diff[a:b].max())
                           for t, (a, b) in zip(tasks, tasks.slices, strict=True)}
    return res


def _parity_images(cfg, n: int) -> tuple[np.ndarray, str]:
    """float32 (n, 3, H, W): the run's test split, or rendered faces when it is unavailable."""
    from ..data.base import DataError
    from .preprocess_np import to_input

    try:
        from ..data.splits import make_splits

        test = make_splits(cfg)["test"]
        return to_input(test.images[:n]), f"test split ({test.source})"
    except (DataError, OSError) as exc:
        from ..data.synthfaces import generate_synthfaces

        ds = generate_synthfaces(max(1, n // 4), 4, tuple(cfg.data.image_size), seed=12345)
        return to_input(ds.images[:n]), f"synthfaces (run data unavailable: {exc})"


def _model_entry(path: Path, fmt: str, **extra) -> dict:
    return {"file": path.name, "format": fmt, "sha256": sha256_file(path),
            "bytes": path.stat().st_size, **extra}


def _maybe_export_pte(encoder, images: np.ndarray, out: Path) -> tuple[dict | None, str]:
    """ExecuTorch + XNNPACK .pte of the obfuscator (batch 1), parity-checked; None if absent."""
    try:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import (
            XnnpackPartitioner,
        )
        from executorch.exir import to_edge_transform_and_lower
        from executorch.runtime import Runtime
    except ImportError:
        (out / "obfuscator.pte").unlink(missing_ok=True)
        return None, "skipped: executorch is not installed (pip install 'deepobfuscator[mobile]')"
    import torch

    x = torch.from_numpy(images[:1])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        ep = torch.export.export(encoder, (x,))
        program = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()])
        buffer = program.to_executorch().buffer
    path = out / "obfuscator.pte"
    atomic_write(path, lambda p: p.write_bytes(buffer))
    method = Runtime.get().load_program(str(path)).load_method("forward")
    worst, scale = 0.0, 1.0
    for i in range(min(8, len(images))):
        xi = torch.from_numpy(images[i:i + 1])
        with torch.no_grad():
            ref = encoder(xi).numpy()
        got = np.asarray(method.execute([xi])[0])
        worst, scale = max(worst, float(np.abs(got - ref).max())), max(scale, float(ref.max()))
    if worst > FEATURE_TOL * scale:
        raise ExportError(f"ExecuTorch parity check failed: features differ by {worst:.3g} "
                          f"(tolerance {FEATURE_TOL * scale:.3g})")
    entry = _model_entry(path, "executorch", delegate="XNNPACK", batch=1,
                         features_max_abs_diff=worst)
    return entry, "obfuscator.pte built with ExecuTorch + XNNPACK (batch 1)"
