"""Stage-1 training throughput (images/s) in one process and data-parallel over N.

    python benchmarks/distributed_throughput.py [--preset cpu] [--procs 1 2]
        [--images 2000] [--epochs 2] [--threads-total 0] [--precision auto] [key=value ...]

Trains the no-privacy baseline (stage 1 only) of the preset on synthfaces with the
real command, `python -m deepobfuscator train` for 1 process and
`python -m torch.distributed.run --standalone --nproc-per-node N -m deepobfuscator
train` for N > 1, and divides the images trained on (full global batches of
train.task.batch_size, all epochs) by rank 0's stage-1 wall time from run.json
(validation and start-up excluded; gradient all-reduces and the first batches'
warm-up included: use enough images and epochs). Each process
gets threads-total // N torch threads (default: all cores), so 1 and N processes
use the same cores (on a busy machine a multi-threaded process can slow down
far more than single-threaded ones: compare with --threads-total 1). On one
machine this measures the overhead of the data-parallel machinery more than any
gain: it pays off across GPUs or machines.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from deepobfuscator.runs import read_run_config


def one(n: int, preset: str, threads: int, overrides: list[str], out: Path) -> dict:
    train = ["-m", "deepobfuscator", "train", "--quiet", "--out", str(out), "--config", preset,
             "privacy.method=none", f"threads={threads}", *overrides]
    launcher = [] if n == 1 else ["-m", "torch.distributed.run", "--standalone",
                                  "--nproc-per-node", str(n)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, *launcher, *train], env=env, capture_output=True,
                          text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{n} process(es) failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    info = json.loads((out / "run.json").read_text())
    c = read_run_config(out)
    n_train = info["splits"]["defender_train"]["images"]
    per = min(c.train.task.batch_size, n_train) // n
    images = (n_train // (per * n)) * per * n * c.train.task.epochs
    seconds = info["stage_seconds"]["task"]
    return {"procs": n, "threads_per_proc": threads, "global_batch": per * n,
            "images": images, "stage1_s": seconds, "images_per_s": images / seconds,
            "command_wall_s": wall, "world_size": info.get("world_size", 1),
            "ranks_identical": info.get("ranks_identical")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--images", type=int, default=2000, help="synthfaces images in all")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads-total", type=int, default=0, help="0 = all cores")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("overrides", nargs="*", metavar="key=value")
    args = ap.parse_args()
    total = args.threads_total or os.cpu_count() or 1
    overrides = [f"data.synth_images={args.images}", f"train.task.epochs={args.epochs}",
                 f"precision={args.precision}", "train.eval_max_images=64", *args.overrides]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}; preset {args.preset}, {' '.join(overrides)}")
    print(f"{'procs':>5} {'threads/proc':>12} {'global batch':>12} {'images':>7} "
          f"{'stage-1 s':>9} {'images/s':>9} {'wall s':>7}  ranks identical")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.procs:
            r = one(n, args.preset, max(1, total // n), overrides, Path(tmp) / f"n{n}")
            print(f"{r['procs']:>5} {r['threads_per_proc']:>12} {r['global_batch']:>12} "
                  f"{r['images']:>7} {r['stage1_s']:>9.1f} {r['images_per_s']:>9.1f} "
                  f"{r['command_wall_s']:>7.1f}  {r['ranks_identical']}")


if __name__ == "__main__":
    main()
