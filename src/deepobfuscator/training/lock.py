"""One `train` per run folder: a second one into the same folder stops with one line.

Two processes training into one folder would interleave checkpoints and weights. The
first holds an exclusive flock on RUN/.train.lock while it runs; the kernel releases it
when the process ends, even on kill -9, so a stale file never blocks a later run. Where
flock does not exist (Windows) there is no lock.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ..runs import RunError, RunPaths


@contextmanager
def train_lock(paths: RunPaths) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # no flock on this platform
        yield
        return
    if paths.root.exists() and not paths.root.is_dir():
        yield  # not a folder: the trainer's own checks say so in one line
        return
    created = not paths.root.exists()
    paths.root.mkdir(parents=True, exist_ok=True)
    f = open(paths.lock, "a+")  # noqa: SIM115 - held for the whole run
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise RunError(f"another `train` is writing into {paths.root}: wait for it to "
                       "finish, or train into another --out folder") from None
    try:
        yield
    finally:
        paths.lock.unlink(missing_ok=True)
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()
        # a folder this run made and left empty (bad data settings) goes again
        if created and paths.root.is_dir() and not any(paths.root.iterdir()):
            paths.root.rmdir()
