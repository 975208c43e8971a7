"""Shared by the deploy tests: the tiny run's settings, the token, and a real uvicorn server
on a free loopback port. The run and its export are session fixtures in conftest.py."""

from __future__ import annotations

import socket
import threading
import time

from deepobfuscator.config import preset_overrides

DEPLOY_TINY = [
    *preset_overrides("tiny"), "threads=1",
    # the paper's split with no defence: a multi-channel map exercises the wire, and the
    # answers carry no device noise (the defended export has tests of its own)
    "privacy.method=none", "model.bottleneck=0", "privacy.normalize_features=false",
    "privacy.feature_noise=0", "model.upload_positions=0",
    # dropout 0, a few task epochs (fewer left this tiny model answering ~0.5 for every
    # face) and one adversarial epoch: answers spread around 0.5, so comparisons mean
    # something
    "train.task.epochs=6", "train.task.lr=0.003", "model.dropout=0",
    "train.adversarial.epochs=1",
]
TOKEN = "test-token-123"
# the multi-task run (conftest.py `multi_run`): two binary tasks and hair colour in four
# classes, all attributes synthfaces draws
MULTI_TASK = ("data.task=[Smiling,Eyeglasses,{name: hair, classes: [Black_Hair, Blond_Hair, "
              "Brown_Hair, other]}]")
HAIR = ["Black_Hair", "Blond_Hair", "Brown_Hair", "other"]


class LiveServer:
    """uvicorn serving `app` in a thread on a socket bound to a free loopback port."""

    def __init__(self, app) -> None:
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


def assert_onnx_matches_run(run, export_dir, image_size: int = 32) -> None:
    """The exported obfuscator.onnx and classifier.onnx give the run's own torch features
    and answers on random images (the cap's noise, if any, is the device's to add)."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from deepobfuscator.deploy.export import without_noise
    from deepobfuscator.runs import load_run

    _, models = load_run(run)
    encoder, _ = without_noise(models.encoder.eval())
    x = torch.rand(4, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        z = encoder(x)
        p = torch.sigmoid(models.classifier.eval()(z))
    z_o = ort.InferenceSession(str(export_dir / "obfuscator.onnx")).run(
        None, {"image": x.numpy()})[0]
    np.testing.assert_allclose(z_o, z.numpy(), atol=1e-5, rtol=0)
    p_o = ort.InferenceSession(str(export_dir / "classifier.onnx")).run(
        None, {"features": z.numpy()})
    np.testing.assert_allclose(p_o[0], p.numpy(), atol=1e-6)


def export_with_features(export, dst, **fields):
    """A copy of `export` whose manifest's features carry `fields` (noise_std=0.5, say), as
    an export made with those settings would: the graphs re-stamped with the new privacy
    digest and the manifest's hashes updated (editing the manifest alone is refused)."""
    import json
    import shutil

    from deepobfuscator.deploy.export import stamp_privacy
    from deepobfuscator.deploy.manifest import privacy_digest, sha256_file

    shutil.copytree(export, dst)
    m = json.loads((dst / "manifest.json").read_text())
    for key, value in fields.items():
        if value is None:
            m["features"].pop(key, None)
        else:
            m["features"][key] = value
    for name in ("obfuscator", "classifier"):
        path = dst / m["models"][name]["file"]
        path.chmod(0o644)
        stamp_privacy(path, privacy_digest(m["features"]))
        m["models"][name]["sha256"] = sha256_file(path)
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst
