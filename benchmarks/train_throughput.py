"""Training throughput (images/s) of stage 1 and of the adversarial rotation.

    python benchmarks/train_throughput.py [--preset cpu] [--batches 20] [--full-run]
        [--data-config configs/celeba-shared.yaml]

Measures the real step functions of deepobfuscator.training on random images of
the preset's size, for float32 and bf16 autocast (where the CPU has it), and with
--full-run the wall time of a complete default training on synthfaces. With
--data-config, the data path: loading the config's main source cold (JPEG decode and
resize into an empty cache) against loading it from the decode-once cache.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch

from deepobfuscator.config import load_config
from deepobfuscator.models import build_models
from deepobfuscator.precision import autocast, cpu_has_bf16, memory_format
from deepobfuscator.privacy import fixed_noise_image, settings_for_size
from deepobfuscator.training import steps, train


def throughput(preset: str, precision: str, stage: str, n_batches: int) -> float:
    """Images per second through E of one training stage: `task` (E and C), `adversarial`
    (the paper's rotation) or `robust` (privacy.method=robust: k attacker updates on fresh
    batches per encoder step; images counted once per encoder step, as epochs count them)."""
    method = {"adversarial": "deepobfuscator", "robust": "robust"}.get(stage, "none")
    cfg = load_config(preset, ["data.private=[Male,Young]", f"privacy.method={method}"])
    torch.manual_seed(0)
    models = build_models(cfg)
    if stage == "robust":
        return _robust_throughput(cfg, models, precision, n_batches)
    layout = memory_format(cfg.channels_last)
    for m in models.named().values():
        m.to(memory_format=layout)
    h, w = cfg.data.image_size
    bs = cfg.train.task.batch_size if stage == "task" else cfg.train.adversarial.batch_size
    device = torch.device("cpu")
    ctx = steps.StepContext(cfg, models, steps.make_optimizers(models, stage, 1e-4),
                            settings_for_size(h, w), fixed_noise_image((3, h, w), 0),
                            amp=lambda: autocast(precision, device))
    batch = steps.Batch(torch.rand(bs, 3, h, w).contiguous(memory_format=layout),
                        torch.randint(0, 2, (bs,)).float(), torch.randint(0, 2, (bs, 2)).float())
    rot = cfg.privacy.rotation

    def one(i: int) -> None:
        if stage == "task":
            steps.task_step(ctx, batch)
        else:
            steps.rotation_step(ctx, batch, rot[i % len(rot)], 10.0)

    for i in range(len(rot)):  # warm-up: one full rotation
        one(i)
    t0 = time.perf_counter()
    for i in range(n_batches):
        one(i)
    return n_batches * bs / (time.perf_counter() - t0)


def _robust_throughput(cfg, models, precision: str, n_batches: int) -> float:
    from deepobfuscator.training.robust import robust_optimizers, robust_step

    layout = memory_format(cfg.channels_last)
    for m in models.named().values():
        m.to(memory_format=layout)
    h, w = cfg.data.image_size
    bs = cfg.train.adversarial.batch_size
    device = torch.device("cpu")
    ctx = steps.StepContext(cfg, models, robust_optimizers(models, "adversarial", 1e-4, 1e-3),
                            settings_for_size(h, w), fixed_noise_image((3, h, w), 0),
                            amp=lambda: autocast(precision, device))

    def batch() -> steps.Batch:
        return steps.Batch(torch.rand(bs, 3, h, w).contiguous(memory_format=layout),
                           torch.randint(0, 2, (bs,)).float(),
                           torch.randint(0, 2, (bs, 2)).float())

    k = cfg.privacy.robust.adversary_steps
    data = [batch() for _ in range(k + 1)]
    mean_face = torch.full((1, 3, h, w), 0.5)
    robust_step(ctx, data[0], data[1:], mean_face)  # warm-up
    t0 = time.perf_counter()
    for _ in range(n_batches):
        robust_step(ctx, data[0], data[1:], mean_face)
    return n_batches * bs / (time.perf_counter() - t0)


def data_path(config: str) -> None:
    """Cold (decode + resize + write the cache) vs cached load of one data source."""
    from deepobfuscator.data.factory import load_source

    cfg = load_config(config)
    with tempfile.TemporaryDirectory() as cache:
        cfg.data.cache_dir = cache
        times = []
        for _ in range(2):  # first: empty cache (cold); second: read back from it
            t0 = time.perf_counter()
            ds = load_source(cfg.data)
            times.append(time.perf_counter() - t0)
    n = len(ds)
    print(f"data {cfg.data.source} {tuple(cfg.data.image_size)}: {n} images; cold "
          f"{times[0]:.2f} s ({n / times[0]:.0f} images/s), cached {times[1]:.3f} s "
          f"({n / times[1]:.0f} images/s), {times[0] / times[1]:.0f}x")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--full-run", action="store_true")
    ap.add_argument("--data-config", help="also time the data path of this config's source")
    args = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"cpu bf16: {cpu_has_bf16()}")
    precisions = ["fp32", "bf16"] if cpu_has_bf16() else ["fp32"]
    for stage in ("task", "adversarial", "robust"):
        for prec in precisions:
            ips = throughput(args.preset, prec, stage, args.batches)
            print(f"{args.preset:>6} {stage:<12} {prec:<5} {ips:8.1f} images/s")
    if args.data_config:
        data_path(args.data_config)
    if args.full_run:
        cfg = load_config(args.preset)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            train(cfg, Path(tmp) / "run", progress=False)
            print(f"full default training ({args.preset}, synthfaces): "
                  f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
