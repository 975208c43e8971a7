"""Errors a user can fix, in a module without heavy imports: the command line catches
them (one line, no traceback) without importing torch, so the phone-side `classify`
command stays torch-free. `run_command` is that catching, shared by both command lines."""

from __future__ import annotations

import sys
from typing import Any


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


# what the command line answers in one line (exit status 2), never with a traceback
USER_ERRORS: tuple[type[Exception], ...] = (UserError, FileNotFoundError)


def permission_message(exc: PermissionError) -> str:
    """What was refused and the fix: an existing file it may not read is an input (fix
    its permissions); anything else is where it writes (choose another folder)."""
    import os

    path = exc.filename
    if path and os.path.isfile(path) and not os.access(path, os.R_OK):
        return f"permission denied: cannot read {path}; fix its permissions (chmod u+r)"
    return (f"permission denied: {path or exc}; choose a folder you can write to (or fix "
            "its permissions)")


def run_command(args: Any, interrupted: str = "") -> int:
    """Run a parsed command; every error a user can fix is one line on stderr, exit 2
    (shared by both command lines)."""
    try:
        return args.func(args)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except PermissionError as exc:  # a read-only output folder, an unreadable input
        print(f"error: {permission_message(exc)}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        if (fix := missing_extra(exc)) is None:
            raise
        print(f"error: {fix}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if interrupted:
            print(interrupted, file=sys.stderr)
        return 130
