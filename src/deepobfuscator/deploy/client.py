"""The phone-side prototype: image files -> local obfuscator -> wire format -> cloud answer.

Imports no torch, on purpose: numpy, Pillow, onnxruntime and httpx are what a
device-side client has. tests/test_client.py runs it with torch made unimportable.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import wire
from ..errors import UserError
from . import keyed_noise
from .manifest import ExportBundle, load_export, privacy_digest
from .preprocess_np import load_batch
from .sessions import open_checked

if TYPE_CHECKING:
    from ..align import Aligner

TOKEN_ENV = "DEEPOBFUSCATOR_TOKEN"


class ClientError(UserError):
    """The server could not be reached or refused the request; the message says why."""


def export_aligner(bundle: ExportBundle, threads: int = 1) -> Aligner | None:
    """The face aligner of an export that aligns (its own detector graphs, checked against
    this package's alignment settings); None for one that does not."""
    if bundle.preprocessing.get("align", "none") == "none":
        return None
    from ..align import aligner_for
    from .preprocess_np import check_settings

    check_settings(bundle.preprocessing)  # a detector this client runs as trained
    graphs = bundle.preprocessing["alignment"]["graphs"]
    return aligner_for({net: bundle.model_path(name) for net, name in graphs.items()},
                       max(1, threads))


class DeviceObfuscator:
    """obfuscator.onnx in onnxruntime, with the manifest's preprocessing and wire settings."""

    def __init__(self, export_dir: str | Path, threads: int = 0,
                 device_secret: bytes | None = None, pin: str | None = None) -> None:
        """device_secret: the 32-byte key of photo-keyed noise (manifest `features.
        noise_key` "photo"); None: this device's (keyed_noise.device_secret(), made on
        first use). Read only when the export asks for keyed noise; never sent or logged.
        pin: the manifest's SHA-256 as `export` printed it (load_export)."""
        self.bundle: ExportBundle = load_export(export_dir, pin=pin)
        # checked against the manifest before any photo is read: an edited input size or
        # noise is refused here
        self.session = open_checked(self.bundle, "obfuscator", threads)
        self.aligner = export_aligner(self.bundle, threads)
        self._rng = np.random.default_rng()  # unseeded: the noise must not be predictable
        self._secret: bytes | None = None
        if self.bundle.noise_std > 0 and self.bundle.noise_key == "photo":
            if device_secret is None:
                device_secret = keyed_noise.device_secret()
            self._secret = keyed_noise.check_secret(device_secret)

    def preprocess(self, image_paths: Sequence[str | Path],
                   faces: list[int] | None = None) -> np.ndarray:
        """Files -> float32 (N, 3, H, W) in [0, 1], exactly as in training (the face found
        and aligned first when the export aligns: `faces` then receives each photo's count
        of faces found; a photo without one is refused, naming it)."""
        return load_batch(image_paths, self.bundle.preprocessing, self.aligner, faces)

    def features(self, images: np.ndarray, noise: bool = True) -> np.ndarray:
        """float32 (N, 3, H, W) model input -> float32 features (N, C, H', W'), as uploaded.

        When the manifest has `features.noise_std` > 0 (an obfuscator trained with
        `privacy.feature_noise`), Gaussian noise of that std is added here: the ONNX graph
        leaves it out. With `features.noise_key` "photo" each image's noise is keyed to its
        pixels by the device secret (the same image always gets the same noise, so repeats
        cannot be averaged); with "fresh" it comes from the OS's entropy on every call.
        noise=False: the graph's output only.
        """
        x = np.ascontiguousarray(images, np.float32)
        z = self.session.run(None, {"image": x})[0]
        std = self.bundle.noise_std
        if noise and std > 0:
            if self._secret is None:
                drawn = self._rng.standard_normal(z.shape)
            else:
                drawn = np.empty(z.shape, np.float32)
                for i, image in enumerate(x):  # one key per image: its noise is its own
                    key = keyed_noise.photo_key(self._secret, image)
                    drawn[i] = keyed_noise.keyed_normal(key, drawn[i].size).reshape(z.shape[1:])
            z = z + (std * drawn).astype(np.float32)
        return z

    def encode(self, features: np.ndarray, dtype: str | None = None) -> bytes:
        """Features -> request body, in the manifest's wire dtype unless told otherwise."""
        return wire.encode(features, dtype or self.bundle.wire_dtype,
                           per_channel=self.bundle.wire_per_channel)


def gzip_body(body: bytes) -> bytes:
    """The body as sent with `Content-Encoding: gzip` (level 6; mtime 0: same bytes in, same
    bytes out). ReLU features are ~30-40 % exact zeros: int8 bodies shrink by ~25-35 %."""
    return gzip.compress(body, compresslevel=6, mtime=0)


def post_features(server_url: str, body: bytes, token: str | None = None,
                  timeout: float = 30.0, client=None, compress: bool = True) -> dict:
    """POST one encoded batch to /v1/classify; returns the JSON answer or raises ClientError.

    compress: send it gzip-compressed (`Content-Encoding: gzip`) when that makes it smaller
    (a few-number upload, like the default's, only grows under gzip's ~20-byte framing).
    """
    import httpx

    token = token if token is not None else os.environ.get(TOKEN_ENV) or None
    headers = {"Content-Type": "application/octet-stream"}
    packed = gzip_body(body) if compress else body
    if len(packed) < len(body):
        body = packed
        headers["Content-Encoding"] = "gzip"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    url = server_url.rstrip("/") + "/v1/classify"
    try:
        if client is not None:
            r = client.post(url, content=body, headers=headers, timeout=timeout)
        else:
            r = httpx.post(url, content=body, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        raise ClientError(f"cannot reach {url}: {exc.__class__.__name__}: {exc}; is "
                          "`deepobfuscator serve` running there?") from exc
    if r.status_code != 200:
        try:
            err = r.json()
            why = f"{err.get('error')}: {err.get('detail')}"
        except ValueError:
            why = r.text[:200]
        hint = " (pass --token or set $DEEPOBFUSCATOR_TOKEN)" if r.status_code == 401 else ""
        raise ClientError(f"server answered {r.status_code} ({why}){hint}")
    return r.json()


def classify_images(server_url: str, export_dir: str | Path,
                    image_paths: Sequence[str | Path], token: str | None = None,
                    batch_size: int = 32, timeout: float = 30.0,
                    compress: bool = True, threads: int = 0,
                    device_secret: bytes | None = None, pin: str | None = None) -> list[dict]:
    """Classify image files through the cloud service; one dict per image, in order:
    {"image", "answers"}, answers holding every task's answer by name (binary:
    {"probability", "label"}; multi-class: {"class", "probability", "probabilities"}); a
    one-task export's also keeps {"task", "probability", "label"} beside it. Only
    obfuscated features leave this machine, in the manifest's wire dtype, gzip-compressed
    where that helps (compress=False: never). device_secret and pin: as DeviceObfuscator's.
    Nothing is sent unless the server's classifier was exported with this export's privacy
    settings (its /healthz `privacy_sha256`)."""
    if batch_size < 1:
        raise ClientError(f"batch size {batch_size}: send at least 1 image per request")
    import httpx

    device = DeviceObfuscator(export_dir, threads=threads, device_secret=device_secret,
                              pin=pin)
    names = device.bundle.task_names
    paths = [Path(p) for p in image_paths]
    results: list[dict] = []
    with httpx.Client() as http:
        _check_server_privacy(http, server_url, device.bundle, timeout)
        for start in range(0, len(paths), batch_size):
            chunk = paths[start:start + batch_size]
            faces: list[int] = []
            z = device.features(device.preprocess(chunk, faces))
            answer = post_features(server_url, device.encode(z), token, timeout, client=http,
                                   compress=compress)
            preds = answer.get("predictions", [])
            if len(preds) != len(chunk):
                raise ClientError(f"server returned {len(preds)} answers for {len(chunk)} images")
            for k, (path, pred) in enumerate(zip(chunk, preds, strict=True)):
                results.append({"image": str(path), **_answers(pred, answer, names),
                                **({"faces": faces[k]} if faces else {})})
    return results


def _check_server_privacy(http, server_url: str, bundle: ExportBundle, timeout: float) -> None:
    """The server's classifier and this device's obfuscator agree on the privacy settings
    (noise, normalisation, sent positions, erasure), or nothing is sent."""
    import httpx

    url = server_url.rstrip("/") + "/healthz"
    try:
        r = http.get(url, timeout=timeout)
        stated = r.json().get("privacy_sha256") if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError, AttributeError) as exc:
        raise ClientError(f"cannot reach {url}: {exc.__class__.__name__}: {exc}; is "
                          "`deepobfuscator serve` running there?") from exc
    mine = privacy_digest(bundle.manifest["features"])
    if stated != mine:
        raise ClientError(f"the server at {server_url} serves a classifier exported with other "
                          "privacy settings than this export's (features: noise, normalisation,"
                          " positions, erasure): use the export the server was made from")


def _answers(pred: dict, answer: dict, names: list[str]) -> dict:
    """One prediction, checked against the export's tasks: a server serving another export
    is an error here, not a silently wrong answer."""
    got = pred.get("answers")
    if got is None and "probability" in pred:  # a server that predates `answers`
        got = {answer.get("task"): {"probability": pred["probability"], "label": pred["label"]}}
    if not isinstance(got, dict) or list(got) != names:
        have = list(got) if isinstance(got, dict) else None
        raise ClientError(f"server answered tasks {have}, but the export answers {names}: "
                          "the server serves another export")
    if len(names) == 1 and "probability" in pred:  # one binary task: today's fields too
        return {"task": names[0], "probability": float(pred["probability"]),
                "label": int(pred["label"]), "answers": got}
    return {"answers": got}


def describe(result: dict) -> str:
    """One image's answers on one line: `Smiling probability 0.9312 label 1; hair
    Blond_Hair probability 0.7104` (the first part is exactly a one-task export's line)."""
    parts = []
    for name, a in result["answers"].items():
        if "class" in a:
            parts.append(f"{name} {a['class']} probability {a['probability']:.4f}")
        else:
            parts.append(f"{name} probability {a['probability']:.4f} label {a['label']}")
    line = f"{result['image']}: " + "; ".join(parts)
    if result.get("faces", 1) > 1:
        line += f" ({result['faces']} faces found: the largest was answered)"
    return line
