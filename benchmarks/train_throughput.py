"""Training throughput (images/s) of stage 1 and of the adversarial rotation.

    python benchmarks/train_throughput.py [--preset cpu] [--batches 20] [--full-run]
        [--data-config configs/celeba-shared.yaml] [--device auto] [--stages task ...]
        [--set data.task=[Smiling,Eyeglasses] ...]

Measures the real step functions of deepobfuscator.training on random images of
the preset's size, for float32 and bf16 autocast (where the device has it), on the CPU
or a GPU (--device; auto: a GPU where there is one), and with
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
from deepobfuscator.devices import resolve_device
from deepobfuscator.models import build_models
from deepobfuscator.precision import autocast, cpu_has_bf16, memory_format
from deepobfuscator.privacy import fixed_noise_image, settings_for_size
from deepobfuscator.training import steps, train

STAGES = ("task", "continuation", "adversarial", "robust")


def throughput(preset: str, precision: str, stage: str, n_batches: int,
               device: torch.device | None = None, extra: list[str] | None = None) -> float:
    """Images per second through E of one training stage: `task` (E and C), `continuation`
    (the default's second stage, privacy.method=task-continuation: robust's step with its
    attackers off), `adversarial` (the paper's rotation) or `robust` (privacy.method=robust:
    k attacker updates on fresh batches per encoder step; images counted once per encoder
    step, as epochs count them)."""
    device = device or torch.device("cpu")
    method = {"adversarial": "deepobfuscator", "robust": "robust"}.get(stage, "none")
    off = (["privacy.robust.adversary_steps=0", "privacy.robust.attribute_weight=0",
            "privacy.robust.reconstruction_weight=0"] if stage == "continuation" else [])
    cfg = load_config(preset, ["data.private=[Male,Young]",
                               f"privacy.method={'robust' if off else method}", *off,
                               *(extra or [])])
    torch.manual_seed(0)
    models = build_models(cfg).to(device)
    if stage in ("robust", "continuation"):
        return _robust_throughput(cfg, models, precision, n_batches, device)
    layout = memory_format(cfg.channels_last)
    for m in models.named().values():
        m.to(memory_format=layout)
    h, w = cfg.data.image_size
    bs = cfg.train.task.batch_size if stage == "task" else cfg.train.adversarial.batch_size
    ctx = steps.StepContext(cfg, models, steps.make_optimizers(models, stage, 1e-4),
                            settings_for_size(h, w), fixed_noise_image((3, h, w), 0).to(device),
                            amp=lambda: autocast(precision, device))
    batch = _batch(bs, h, w, layout, device, cfg)
    rot = cfg.privacy.paper.rotation

    def one(i: int) -> None:
        if stage == "task":
            steps.task_step(ctx, batch)
        else:
            steps.rotation_step(ctx, batch, rot[i % len(rot)], 10.0)

    for i in range(len(rot)):  # warm-up: one full rotation
        one(i)
    return _timed(lambda: [one(i) for i in range(n_batches)], n_batches * bs, device)


def _batch(bs: int, h: int, w: int, layout: torch.memory_format,
           device: torch.device, cfg) -> steps.Batch:
    from deepobfuscator.tasks import task_set

    # every task's labels: 0/1, or a class index of a multi-class task
    labels = torch.stack([torch.randint(0, max(t.outputs, 2), (bs,), device=device)
                          for t in task_set(cfg)], 1).float()
    return steps.Batch(torch.rand(bs, 3, h, w, device=device).contiguous(memory_format=layout),
                       labels, torch.randint(0, 2, (bs, 2), device=device).float())


def _timed(work, n_images: int, device: torch.device) -> float:
    """Images per second of work(); on a GPU, the queued kernels are waited for."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    work()
    sync()
    return n_images / (time.perf_counter() - t0)


def _robust_throughput(cfg, models, precision: str, n_batches: int,
                       device: torch.device) -> float:
    from deepobfuscator.training.robust import robust_optimizers, robust_step

    layout = memory_format(cfg.channels_last)
    for m in models.named().values():
        m.to(memory_format=layout)
    h, w = cfg.data.image_size
    bs = cfg.train.adversarial.batch_size
    ctx = steps.StepContext(cfg, models, robust_optimizers(models, "adversarial", 1e-4, 1e-3),
                            settings_for_size(h, w), fixed_noise_image((3, h, w), 0).to(device),
                            amp=lambda: autocast(precision, device))
    k = cfg.privacy.robust.adversary_steps
    data = [_batch(bs, h, w, layout, device, cfg) for _ in range(k + 1)]
    mean_face = torch.full((1, 3, h, w), 0.5, device=device)
    robust_step(ctx, data[0], data[1:], mean_face)  # warm-up
    return _timed(lambda: [robust_step(ctx, data[0], data[1:], mean_face)
                           for _ in range(n_batches)], n_batches * bs, device)


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
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    ap.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    ap.add_argument("--set", nargs="*", default=[], help="config overrides (key=value), e.g. "
                    "data.task=[...] for several tasks")
    args = ap.parse_args()
    device = resolve_device(args.device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none"
    print(f"machine: {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"cpu bf16: {cpu_has_bf16()}, device {device} (GPU: {gpu})")
    has_bf16 = (torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_has_bf16())
    precisions = ["fp32", "bf16"] if has_bf16 else ["fp32"]
    for stage in args.stages:
        for prec in precisions:
            ips = throughput(args.preset, prec, stage, args.batches, device, args.set)
            print(f"{args.preset:>6} {stage:<12} {prec:<5} {ips:8.1f} images/s")
    if args.data_config:
        data_path(args.data_config)
    if args.full_run:
        cfg = load_config(args.preset, [f"device={args.device}"])
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            train(cfg, Path(tmp) / "run", progress=False)
            print(f"full default training ({args.preset}, synthfaces): "
                  f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
