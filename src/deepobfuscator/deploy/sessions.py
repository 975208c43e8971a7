"""An export's ONNX graphs opened in onnxruntime and checked against the manifest before
any image is read: the one place serve, classify and bench load them."""

from __future__ import annotations

from ..threads import resolve_threads
from .manifest import ExportBundle, ExportError, check_graph


def open_checked(bundle: ExportBundle, name: str, threads: int = 0):
    """The export's `name` model ("obfuscator" or "classifier") as an onnxruntime session,
    refused in one line if it does not load, if the manifest's privacy settings are not
    the ones it was exported with, or if its shapes are not the manifest's."""
    import onnxruntime as ort

    path = bundle.model_path(name)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = resolve_threads(threads)  # 0: the free cores
    try:
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime's own exception types
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise ExportError(f"{path}: onnxruntime cannot load it ({type(exc).__name__}: "
                          f"{first}); export the run again") from None
    check_graph(bundle, name, session)
    return session
