"""Wall time of a command on a quiet machine and beside one competing CPU-bound process,
for several `threads` settings: does the default (0 = auto) degrade gracefully?

    python benchmarks/thread_contention.py [--threads 0 2 1] [--demo]

Without --demo it times a short task stage (synthfaces, 2,000 images, 2 epochs); with
--demo the whole `deepobfuscator demo`. The competitor is `python -c "while True: pass"`,
started before the command. Each measurement is a fresh process in a fresh folder.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TASK = ["train", "privacy.method=none", "data.synth_images=2000", "train.task.epochs=2"]


def timed(argv: list[str], threads: int, out: Path, demo: bool) -> float:
    # options first, then the key=value overrides (argparse's positional tail)
    cmd = [sys.executable, "-m", "deepobfuscator", argv[0], "--quiet", "--out", str(out)]
    cmd += ["--threads", str(threads)] if demo else [*argv[1:], f"threads={threads}"]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[0, 2, 1])
    ap.add_argument("--demo", action="store_true", help="time the whole demo (minutes each)")
    args = ap.parse_args()
    argv = ["demo"] if args.demo else TASK
    # warm the data cache once so every timing measures compute, not decoding
    work = Path(tempfile.mkdtemp(prefix="contention-"))
    if not args.demo:
        timed(argv, 1, work / "warm", False)
    rows = []
    for competing in (False, True):
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) \
            if competing else None
        try:
            time.sleep(0.5 if competing else 0)
            for t in args.threads:
                out = work / f"{int(competing)}-{t}"
                rows.append((competing, t, timed(argv, t, out, args.demo)))
                shutil.rmtree(out, ignore_errors=True)
        finally:
            if spinner is not None:
                spinner.kill()
                spinner.wait()
    shutil.rmtree(work, ignore_errors=True)
    what = "demo" if args.demo else "task stage (2,000 synthfaces, 2 epochs)"
    print(f"{what}, {os.cpu_count()} cores")
    print(f"{'machine':<28} {'threads':>8} {'seconds':>8}")
    for competing, t, s in rows:
        label = "one competing process" if competing else "quiet"
        print(f"{label:<28} {('auto' if t == 0 else t):>8} {s:>8.1f}")


if __name__ == "__main__":
    main()
