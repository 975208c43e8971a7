"""Errors a user can fix, in a module without heavy imports: the command line catches
them (one line, no traceback) without importing torch, so the phone-side `classify`
command stays torch-free."""


class UserError(ValueError):
    """Base of every error a user can fix: bad input, settings, files or requests. Its
    message names the problem and the fix; the command line prints it in one line (exit
    status 2), never a traceback."""


class ConfigError(UserError):
    """A bad configuration value or key; the message says what is valid."""


class DataError(UserError):
    """A problem with the user's data or data settings; the message says how to fix it."""


class RunError(UserError):
    """A run folder that is missing, unfinished or inconsistent."""


# which extra installs each optional top-level module (pyproject.toml); the base install
# is the torch-free client
EXTRA_OF = {**dict.fromkeys(("torch", "safetensors", "tqdm", "torchmetrics", "matplotlib",
                             "onnx", "onnxscript"), "train"),
            **dict.fromkeys(("fastapi", "uvicorn", "starlette", "pydantic"), "serve"),
            **dict.fromkeys(("dlib", "face_recognition_models"), "recognition")}


def missing_extra(exc: ModuleNotFoundError) -> str | None:
    """The one-line fix for a module an extra would have installed, or None."""
    top = (exc.name or "").split(".")[0]
    extra = EXTRA_OF.get(top)
    if extra is None:
        return None
    return (f"this command needs {top}, which the base install (the device client) leaves "
            f"out: pip install 'deepobfuscator[{extra}]' (or [all])")
