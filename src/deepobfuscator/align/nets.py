"""The three MTCNN networks (Zhang et al., IEEE SPL 2016) as ONNX graphs, built from the
weights that ship inside the facenet-pytorch wheel (MIT licence; `make setup` installs it
with --no-deps: only its three weight files are read, its code is never imported).

P-Net proposes faces on an image pyramid, R-Net refines 24 x 24 crops of the proposals,
O-Net scores 48 x 48 crops and gives five landmarks. The graphs are written once into the
cache (keyed by the weights' hash) and copied into every export that aligns, so training,
the torch-free client and the page run the very same networks. Needs torch (the `train`
extra); the client only reads the .onnx files.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError
from ..io import default_cache_dir
from ..onnx_graphs import export_graph
from .detect import NET_NAMES

WEIGHTS_PACKAGE = "facenet_pytorch"
INSTALL_HINT = ("pip install --no-deps facenet-pytorch==2.6.0 (make setup does; only its "
                "MTCNN weight files are used)")


def weight_files() -> dict[str, Path]:
    """The three .pt state dicts inside the installed facenet-pytorch package, found
    without importing it (its __init__ needs torchvision, which this project does not
    install)."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    roots = list(spec.submodule_search_locations or []) if spec else []
    for root in roots:
        files = {n: Path(root) / "data" / f"{n}.pt" for n in NET_NAMES}
        if all(p.is_file() for p in files.values()):
            return files
    raise UserError(f"data.align=mtcnn needs the MTCNN weights: {INSTALL_HINT}")


class _PNet(nn.Module):
    """Fully convolutional: H x W >= 12 -> (box offsets (1, 4, h, w), face prob (1, 2, h, w))."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1, self.conv4_2 = nn.Conv2d(32, 2, 1), nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), self.conv4_1(x).softmax(1)


class _RNet(nn.Module):
    """(N, 3, 24, 24) -> (box offsets (N, 4), face prob (N, 2))."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1, self.dense5_2 = nn.Linear(128, 2), nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        # the weights were converted from a framework that flattens (W, H, C)
        x = self.prelu4(self.dense4(x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)))
        return self.dense5_2(x), self.dense5_1(x).softmax(1)


class _ONet(nn.Module):
    """(N, 3, 48, 48) -> (box offsets (N, 4), landmarks (N, 10): 5 x then 5 y, as shares
    of the box, face prob (N, 2))."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1, self.dense6_2 = nn.Linear(256, 2), nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.dense5(x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)))
        return self.dense6_2(x), self.dense6_3(x), self.dense6_1(x).softmax(1)


_NETS: dict[str, type[nn.Module]] = {"pnet": _PNet, "rnet": _RNet, "onet": _ONet}
_OUTPUTS = {"pnet": ["boxes", "prob"], "rnet": ["boxes", "prob"],
            "onet": ["boxes", "landmarks", "prob"]}
_SIDE = {"rnet": 24, "onet": 48}


def load_net(name: str) -> nn.Module:
    net = _NETS[name]()
    state = torch.load(weight_files()[name], map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    return net.eval()


def weights_digest() -> str:
    h = hashlib.sha256()
    for name, path in sorted(weight_files().items()):
        h.update(name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _export(name: str, path: Path) -> None:
    net = load_net(name)
    if name == "pnet":
        example = torch.zeros(1, 3, 40, 52)
        dims: dict[int, torch.export.Dim] = {2: torch.export.Dim("height", min=12, max=8192),
                                             3: torch.export.Dim("width", min=12, max=8192)}
    else:
        example = torch.zeros(2, 3, _SIDE[name], _SIDE[name])
        dims = {0: torch.export.Dim("batch", min=1, max=4096)}
    export_graph(net, example, path, ["image"], _OUTPUTS[name], dims)


def detector_graphs(cache_dir: Path | None = None) -> dict[str, Path]:
    """The paths of pnet.onnx, rnet.onnx and onet.onnx, exported once into the cache
    (written to a temporary folder and renamed into place: a killed export leaves
    nothing half-written)."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    entry = root / f"mtcnn-onnx-{weights_digest()[:16]}"
    graphs = {n: entry / f"{n}.onnx" for n in NET_NAMES}
    if all(p.is_file() for p in graphs.values()):
        return graphs
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-mtcnn-", dir=root))
    try:
        for name in NET_NAMES:
            _export(name, tmp / f"{name}.onnx")
        try:
            os.replace(tmp, entry)
        except OSError:  # another process finished first: use its copy
            if not all(p.is_file() for p in graphs.values()):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return graphs
