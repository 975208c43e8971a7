"""On-device benchmark of an export: latency, size, FLOPs and bytes on the wire.

Batch 1 (one camera frame), per thread count: onnxruntime fp32, onnxruntime int8
(static QDQ quantization, per-channel weights, calibrated on rendered faces),
eager PyTorch (when the run's weights are on this machine), for the obfuscator
alone and for the whole model (obfuscator + classifier) run on the device.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from .. import wire
from ..log import log
from ..preprocessing import ImageRefused
from .client import export_aligner
from .manifest import ExportError, load_export
from .preprocess_np import ImageError, to_input, to_uint8
from .sessions import open_checked

ORIGINAL_SIZE = (218, 178)  # CelebA's aligned crops (h, w): the stand-in "original photo"


def bench(export_dir: str | Path, threads: Sequence[int] = (1, 2), runs: int = 100,
          warmup: int = 10, image: str | Path | None = None, verbose: bool = True) -> dict:
    """Measure an export folder; prints a table (verbose) and returns the figures."""
    if runs < 1 or warmup < 0 or not threads or min(threads) < 1:
        raise ExportError(f"bench: runs={runs}, warmup={warmup}, threads={list(threads)}: "
                          "time at least 1 run, with thread counts of at least 1")
    bundle = load_export(export_dir)
    for name in ("obfuscator", "classifier"):  # the manifest's shapes and privacy settings
        open_checked(bundle, name, 1)
    pre = bundle.preprocessing
    photo, photo_source = _sample_photo(image)
    aligner = export_aligner(bundle, 1)
    framed = photo
    if aligner is not None:  # the export finds and aligns the face first: so does bench
        try:
            framed = aligner.align(photo, photo_source).image
        except ImageRefused as exc:
            raise ImageError(f"{exc}; pass --image with a photo of a face") from None
    x = to_input(to_uint8(framed, {**pre, "align": "none"})[None])
    res: dict = {"export": str(bundle.root), "input_shape": list(x.shape),
                 "feature_shape": list(bundle.feature_shape), "runs": runs,
                 "photo": photo_source, "latency_ms": {}, "notes": []}
    if aligner is not None:
        res["latency_ms"]["face detection and alignment (MTCNN + warp) t1"] = _time(
            lambda: aligner.align(photo), min(runs, 20), min(warmup, 2))
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"fp32": (bundle.model_path("obfuscator"), bundle.model_path("classifier"))}
        has_onnx = importlib.util.find_spec("onnx") is not None
        if has_onnx:  # the quantizer and the MAC count read the graph with onnx
            paths["int8"] = _quantize(paths["fp32"], _calibration_inputs(pre, x), Path(tmp))
        else:
            res["notes"].append("int8 copies and MAC counts skipped: they need the onnx "
                                "package (pip install 'deepobfuscator[train]')")
        res["model_bytes"] = {f"{part}_{kind}": p.stat().st_size for kind, pair in paths.items()
                              for part, p in zip(("obfuscator", "classifier"), pair, strict=True)}
        for t in threads:
            for kind, (enc_p, cls_p) in paths.items():
                enc, cls = _session(enc_p, t), _session(cls_p, t)
                res["latency_ms"][f"obfuscator onnxruntime {kind} t{t}"] = _time(
                    lambda e=enc: e.run(None, {"image": x}), runs, warmup)
                res["latency_ms"][f"whole model onnxruntime {kind} t{t}"] = _time(
                    lambda e=enc, c=cls: c.run(None, {"features": e.run(None, {"image": x})[0]}),
                    runs, warmup)
        if "int8" in paths:
            res["int8_model_check"] = _int8_check(paths, _held_out_inputs(pre))
    res["latency_ms"].update(_torch_latency(bundle.manifest, x, threads, runs, warmup, res))
    pte = bundle.manifest["models"].get("obfuscator_pte")
    if pte:
        res["model_bytes"]["obfuscator_pte"] = pte["bytes"]
    if has_onnx:
        enc_macs = onnx_macs(bundle.model_path("obfuscator"))
        cls_macs = onnx_macs(bundle.model_path("classifier"))
        res["macs"] = {"obfuscator": enc_macs, "classifier": cls_macs,
                       "whole": enc_macs + cls_macs}
        res["flops"] = {k: 2 * v for k, v in res["macs"].items()}
    res["payload_bytes"] = payload_sizes(_session(paths["fp32"][0], 1).run(None, {"image": x})[0],
                                         photo, pre)
    if verbose:
        log.info(format_report(res))
    return res


def _sample_photo(image: str | Path | None) -> tuple[Image.Image, str]:
    if image is not None:
        from ..preprocessing import ImageRefused, decode
        from .preprocess_np import ImageError

        try:
            with decode(image) as img:
                return img.convert("RGB"), str(image)
        except ImageRefused as exc:
            raise ImageError(str(exc)) from None
    from ..data.synthfaces import generate_synthfaces

    ds = generate_synthfaces(1, 1, ORIGINAL_SIZE, seed=0)
    return Image.fromarray(ds.images[0]), f"rendered synthface at {ORIGINAL_SIZE[0]}x" \
        f"{ORIGINAL_SIZE[1]} (pass --image for a real photo)"


def _calibration_inputs(pre: dict, x: np.ndarray) -> np.ndarray:
    from ..data.synthfaces import generate_synthfaces

    ds = generate_synthfaces(8, 2, tuple(pre["size"]), seed=7)
    return np.concatenate([x, to_input(ds.images)])


def _held_out_inputs(pre: dict) -> np.ndarray:
    """Rendered faces of other identities than the calibration set's: the int8 check is
    not scored on the images the quantizer calibrated on."""
    from ..data.synthfaces import generate_synthfaces

    return to_input(generate_synthfaces(16, 2, tuple(pre["size"]), seed=8).images)


def _session(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _time(fn, runs: int, warmup: int) -> dict:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return {"median": float(np.median(ts)), "p90": float(np.percentile(ts, 90))}


def _quantize(fp32: tuple[Path, Path], calib: np.ndarray, tmp: Path) -> tuple[Path, Path]:
    """Static int8 (QDQ) copies of both models, calibrated on rendered faces."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self, name: str, arrays: np.ndarray) -> None:
            self.items = iter([{name: a[None]} for a in arrays])

        def get_next(self) -> dict | None:
            return next(self.items, None)

    feats = _session(fp32[0], 1).run(None, {"image": calib})[0]
    out = (tmp / "obfuscator_int8.onnx", tmp / "classifier_int8.onnx")
    root, level = logging.getLogger(), logging.getLogger().level
    root.setLevel(logging.ERROR)  # the quantizer logs "consider pre-processing" on the root logger
    try:
        for src, dst, name, data in ((fp32[0], out[0], "image", calib),
                                     (fp32[1], out[1], "features", feats)):
            quantize_static(str(src), str(dst), Reader(name, data),
                            quant_format=QuantFormat.QDQ, per_channel=True)
    finally:
        root.setLevel(level)
    return out


def _int8_check(paths: dict, images: np.ndarray) -> dict:
    """How far the int8 models drift from fp32 on held-out rendered faces (not a task
    metric: benchmarks/wire_cost.py measures task figures)."""
    z32 = _session(paths["fp32"][0], 1).run(None, {"image": images})[0]
    z8 = _session(paths["int8"][0], 1).run(None, {"image": images})[0]
    p32 = _session(paths["fp32"][1], 1).run(None, {"features": z32})[0]
    p8 = _session(paths["int8"][1], 1).run(None, {"features": z8})[0]
    return {"features_max_abs_diff_rel": float(np.abs(z8 - z32).max() / max(z32.max(), 1e-12)),
            "probability_max_abs_diff": float(np.abs(p8 - p32).max()),
            "labels_flipped": int(((p8 >= 0.5) != (p32 >= 0.5)).sum()), "images": len(images)}


def _torch_latency(manifest: dict, x: np.ndarray, threads: Sequence[int], runs: int,
                   warmup: int, res: dict) -> dict:
    """Eager PyTorch from the run's weights, if torch and the run folder are here."""
    run = manifest.get("run", {}).get("path", "")
    try:
        import torch

        from ..runs import load_run

        _, models = load_run(Path(run))
    except Exception as exc:  # noqa: BLE001 - any failure here means "skip", with the reason
        res["notes"].append(f"eager PyTorch skipped: {exc.__class__.__name__}: {exc}")
        return {}
    out, before, xt = {}, torch.get_num_threads(), torch.from_numpy(x)
    enc, cls = models.encoder.float().eval(), models.classifier.float().eval()
    try:
        with torch.inference_mode():
            for t in threads:
                torch.set_num_threads(t)
                out[f"obfuscator torch eager fp32 t{t}"] = _time(lambda: enc(xt), runs, warmup)
                out[f"whole model torch eager fp32 t{t}"] = _time(
                    lambda: torch.sigmoid(cls(enc(xt))), runs, warmup)
    finally:
        torch.set_num_threads(before)
    return out


def onnx_macs(path: Path) -> int:
    """Multiply-accumulates of Conv, Gemm and MatMul nodes at batch 1, from inferred shapes."""
    import onnx

    m = onnx.load(str(path))
    for inp in m.graph.input:
        inp.type.tensor_type.shape.dim[0].dim_value = 1
    m = onnx.shape_inference.infer_shapes(m)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*m.graph.input, *m.graph.value_info, *m.graph.output]}
    shapes.update({i.name: list(i.dims) for i in m.graph.initializer})
    macs = 0
    for node in m.graph.node:
        out = shapes.get(node.output[0], [])
        if node.op_type == "Conv":  # each output value: C_in/groups * kh * kw MACs
            macs += int(np.prod(out)) * int(np.prod(shapes[node.input[1]][1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            a = shapes[node.input[0]]
            trans_a = any(at.name == "transA" and at.i for at in node.attribute)
            macs += int(np.prod(out)) * (a[0] if trans_a else a[-1])
    return macs


def payload_sizes(features: np.ndarray, photo: Image.Image, pre: dict) -> dict:
    """Bytes per image on the wire (batch 1, header included; also gzip-compressed, as
    `classify` sends them) vs the photo as JPEG q90/q75."""
    from .client import gzip_body

    bodies = {f"wire_{d}": wire.encode(features, d) for d in ("float32", "float16", "int8")}
    bodies["wire_int8_per_tensor"] = wire.encode(features, "int8", per_channel=False)
    sizes: dict[str, int | str] = {k: len(b) for k, b in bodies.items()}
    sizes.update({f"{k}_gzip": len(gzip_body(b)) for k, b in bodies.items()})
    small = Image.fromarray(to_uint8(photo, pre))
    for q in (90, 75):
        for name, img in (("input_resolution", small), ("original", photo)):
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=q)
            sizes[f"jpeg_q{q}_{name}"] = buf.tell()
    sizes["raw_uint8_input_resolution"] = int(np.asarray(small).size)
    sizes["original_resolution"] = f"{photo.size[1]}x{photo.size[0]}"
    return sizes


def format_report(res: dict) -> str:
    lines = [f"export: {res['export']}  input {res['input_shape']}  features "
             f"{res['feature_shape']}  batch 1, {res['runs']} runs",
             f"{'latency (ms/image)':<44}{'median':>9}{'p90':>9}"]
    lines += [f"  {k:<42}{v['median']:>9.3f}{v['p90']:>9.3f}"
              for k, v in res["latency_ms"].items()]
    lines.append("model size (bytes): " + ", ".join(f"{k} {v}"
                                                    for k, v in res["model_bytes"].items()))
    if "macs" in res:
        lines.append("MACs at batch 1: " + ", ".join(f"{k} {v / 1e6:.2f} M"
                                                     for k, v in res["macs"].items())
                     + "  (FLOPs = 2 x MACs)")
    lines.append(f"payload bytes per image ({res['photo']}): "
                 + ", ".join(f"{k} {v}" for k, v in res["payload_bytes"].items()))
    if "int8_model_check" in res:
        c = res["int8_model_check"]
        lines.append(f"int8 models vs fp32 on {c['images']} held-out rendered faces: features "
                     f"max diff {c['features_max_abs_diff_rel']:.3%} of max, probability max "
                     f"diff {c['probability_max_abs_diff']:.2e}, labels flipped "
                     f"{c['labels_flipped']}")
    lines += [f"note: {n}" for n in res["notes"]]
    return "\n".join(lines)
