"""Writing a torch module as an ONNX graph: one opset and one quiet, atomic exporter for
the export's two graphs and the face detector's three (align.nets)."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any

from .io import atomic_write

OPSET = 18


def export_graph(module: Any, example: Any, path: Path, input_names: list[str],
                 output_names: list[str], dynamic_shapes: dict[int, Any]) -> None:
    """module(example) as ONNX at `path` (written beside it and renamed into place);
    dynamic_shapes: the input's dynamic dimensions (index -> torch.export.Dim)."""
    import torch

    # the exporter prints progress and warns about torchvision ops: keep the CLI readable
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        prog = torch.onnx.export(module, (example,), dynamo=True, opset_version=OPSET,
                                 input_names=input_names, output_names=output_names,
                                 dynamic_shapes=(dynamic_shapes,), verbose=False)
    assert prog is not None  # dynamo=True always returns the program
    atomic_write(path, lambda p: prog.save(str(p), external_data=False))
