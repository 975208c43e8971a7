"""What an attacker rebuilds from exactly the bytes a device sent: the audit's inverse
networks, served beside the classifier on request (`serve --attacker-view AUDIT_DIR`).

The audit trained a fresh inverse network on the obfuscated run's features and one on its
no-privacy baseline's. The server decodes a wire body and runs the matching network: for
the export's own features, that is the attacker's view of what the cloud received; for
the baseline, the page runs the baseline's obfuscator (exported at start-up and served at
/v1/attacker-view/baseline.onnx) on the same photo, to show what the same attacker would
rebuild without the defence. Needs the training extra (torch); off unless asked for.
"""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path
from typing import cast

import numpy as np

from .manifest import ExportBundle, ExportError


class AttackerView:
    def __init__(self, audit_dir: str | Path, bundle: ExportBundle) -> None:
        import torch
        from safetensors.torch import load_file

        from ..models import feature_shape
        from ..models.attack_nets import InversionNetwork
        from ..runs import read_run_config
        from .export import export_run

        audit_dir = Path(audit_dir)
        path = audit_dir / "audit.json"
        if not path.is_file():
            raise ExportError(f"--attacker-view {audit_dir}: no audit.json there; run "
                              "`deepobfuscator audit RUN --baseline BASELINE --out DIR` first")
        audit = json.loads(path.read_text())
        runs = audit.get("runs_dirs", {})
        if "baseline" not in runs:
            raise ExportError(f"--attacker-view {audit_dir}: the audit has no baseline run; "
                              "audit with --baseline to compare against it")
        cfg = read_run_config(Path(runs["obfuscated"]))
        if cfg.fingerprint() != bundle.manifest["run"].get("config_fingerprint"):
            raise ExportError(f"--attacker-view {audit_dir} audits {runs['obfuscated']}, not "
                              "the run this export was made from: its inverse network would "
                              "read other features")
        self.networks: dict[str, tuple[InversionNetwork, tuple[int, ...],
                                       np.ndarray | None]] = {}
        self.selected: dict[str, np.ndarray] = {}  # run -> the flat indices its network reads
        for name in ("obfuscated", "baseline"):
            weights = audit_dir / "attackers" / name / "inversion.safetensors"
            if not weights.is_file():
                raise ExportError(f"--attacker-view: {weights} is missing; audit again")
            run_cfg = read_run_config(Path(runs[name]))
            net = InversionNetwork(feature_shape(run_cfg),
                                   cast("tuple[int, int]", tuple(run_cfg.data.image_size)))
            net.load_state_dict(load_file(str(weights)))
            self.networks[name] = (net.eval(), tuple(feature_shape(run_cfg)), None)
            # an inverse network that kept the audit's selected view reads only those numbers
            views = audit.get("runs", {}).get(name, {}).get("views", {})
            if views.get("inversion", "all") != "all":
                self.selected[name] = np.asarray(views["positions"])
        # a sparse upload arrives packed as (1, 1, K): the network reads the (C, H, W) map
        packed = bundle.manifest["features"].get("positions")
        if packed:
            net, shape, _ = self.networks["obfuscated"]
            self.networks["obfuscated"] = (net, shape, np.asarray(packed["flat_indices"]))
        self._torch = torch
        self._tmp = tempfile.TemporaryDirectory(prefix="deepobfuscator-attacker-view-")
        # the baseline's obfuscator, for the page to run on the same photo
        base = export_run(runs["baseline"], Path(self._tmp.name) / "baseline", parity_images=4,
                          mobile=False, threads=torch.get_num_threads())  # the server's own
        self.baseline_model = (base / "obfuscator.onnx").read_bytes()
        self.baseline_manifest = json.loads((base / "manifest.json").read_text())
        if self.baseline_manifest["input"] != bundle.preprocessing:
            raise ExportError("--attacker-view: the baseline prepares photos differently from "
                              "this export; train it with the same data settings")

    def feature_shape(self, run: str) -> tuple[int, ...]:
        """The shape of what the device sends for this run."""
        _, shape, positions = self.networks[run]
        return shape if positions is None else (1, 1, len(positions))

    def reconstruct_png(self, run: str, features: np.ndarray) -> bytes:
        """The inverse network's reconstruction of the first image of `features`, as PNG."""
        from PIL import Image

        from ..models.upload import unpack_numpy

        net, shape, positions = self.networks[run]
        if positions is not None:
            features = unpack_numpy(features[:1], positions, shape)
        if run in self.selected:
            kept = np.zeros(int(np.prod(shape)), dtype=features.dtype)
            kept[self.selected[run]] = 1
            features = features[:1] * kept.reshape(1, *shape)
        with self._torch.inference_mode():
            x = net(self._torch.from_numpy(np.ascontiguousarray(features[:1])))
        img = (x[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        return buf.getvalue()
