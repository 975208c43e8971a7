"""Local against Ray for a small study (issue 35): the same 4 points (2 arms x 2 training
seeds, tiny synthfaces runs, one audit each), run by the local executor with 2 threads per
point and by a local Ray with 1 thread per point (2 at once), and a 1-point study on Ray for
the cost of starting it.

    python benchmarks/study_executors.py [--out runs/study-bench]

Prints the wall times; every run starts from an empty folder (nothing resumed).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from deepobfuscator.study import StudySpec, run_study

TINY = [
    "data.image_size=[32,32]", "data.synth_images=400", "data.synth_images_per_identity=8",
    "model.width=0.125", "model.fc_hidden=32", "train.task.epochs=2",
    "train.adversarial.epochs=1", "privacy.method=task-continuation",
    "data.private=[Male,Young]",
]
AUDIT = {"max_epochs": 2, "whitebox_images": 2, "whitebox_steps": 5, "grid_images": 2,
         "recogniser": "off", "prior_images": 0, "repeats": "1", "pooled": "1"}


def spec(seeds: list[int], arms: dict[str, list[str]]) -> StudySpec:
    return StudySpec(config="cpu", overrides=TINY, arms=arms, seeds=seeds, audit=AUDIT)


def timed(label: str, s: StudySpec, out: Path, executor: str, threads: int) -> float:
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    run_study(s, out, executor=executor, threads=threads)
    took = time.perf_counter() - t0
    print(f"{label}: {took:.1f} s", flush=True)
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/study-bench"))
    args = ap.parse_args()
    four = spec([0, 1], {"plain": [], "tight": ["privacy.feature_noise=6"]})
    timed("4 points, local executor, 2 threads each", four, args.out / "local", "local", 2)
    import ray

    try:
        timed("4 points, Ray, 1 thread each (Ray's start included)", four, args.out / "ray",
              "ray", 1)
        one = spec([0], {"plain": []})
        timed("1 point, Ray already started", one, args.out / "ray-one", "ray", 1)
    finally:
        ray.shutdown()
    one = spec([0], {"plain": []})
    timed("1 point, local executor, 1 thread", one, args.out / "local-one", "local", 1)
    t0 = time.perf_counter()
    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    print(f"Ray's start alone: {time.perf_counter() - t0:.1f} s")
    ray.shutdown()


if __name__ == "__main__":
    main()
