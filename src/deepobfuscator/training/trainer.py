"""Training, resumable from any checkpoint: the stages of the config's privacy method.

Every run trains (1) task: E and C learn the task, the same for every method; then what
its privacy method (methods.py: none, the paper's `deepobfuscator`, `robust`) declares of
(2) reconstructor, (3) adversaries, (4) adversarial, with the method's optimizers and
steps. This loop does the rest for all of them: batch order, checkpoints, evaluation,
data-parallel sync.

Resuming: batch order is a pure function of (seed, stage, epoch), and the
checkpoint holds weights, optimizer and RNG states and the position, so a run
resumed from a checkpoint ends with the same weights as one never interrupted.

Data-parallel (torchrun): each process trains on its slice of every global batch and
gradients are averaged before each step; only rank 0 writes. See distributed.py.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import Config, StageConfig, config_from_dict, save_config
from ..data.base import FaceDataset
from ..data.splits import check_splits_match, make_splits, split_summary, write_splits
from ..devices import resolve_device
from ..io import atomic_write_json, atomic_write_text
from ..log import log
from ..methods import Stage, StepFn, method_for
from ..models import build_models, feature_shape
from ..models.budget import phone_budget
from ..precision import autocast, memory_format, resolve_precision
from ..privacy import fixed_noise_image, settings_for_size
from ..runs import RunError, RunPaths
from ..tasks import task_set
from ..threads import use_threads
from . import augment
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state, versions
from .distributed import Dist, GradSync, shard, state_checksum
from .evaluate import evaluate
from .finish import FinishPlan, FinishRecord, finish_plan, history_record, run_finish
from .lock import train_lock
from .steps import (
    Batch,
    StepContext,
    cosine_fraction,
    make_optimizers,
    scaled_noise,
    set_lr_fraction,
    task_step,
)

STAGES: tuple[Stage, ...] = ("task", "reconstructor", "adversaries", "adversarial")


def stages_for(cfg: Config) -> tuple[Stage, ...]:
    return method_for(cfg).stages(cfg)


def train(cfg: Config, out_dir: Path, progress: bool = True, restart: bool = False) -> Path:
    """Train (or resume) a run into `out_dir`; returns the run folder.

    Under torchrun (WORLD_SIZE > 1) every process calls this; they train data-parallel
    and only rank 0 writes into `out_dir`.
    """
    d = Dist.from_env()
    try:
        if not d.is_main:  # rank 0 holds the folder's lock for all of them
            return _train(cfg, Path(out_dir), False, restart, d)
        with train_lock(RunPaths(Path(out_dir))):
            return _train(cfg, Path(out_dir), progress, restart, d)
    finally:
        d.close()


def _train(cfg: Config, out_dir: Path, progress: bool, restart: bool, d: Dist) -> Path:
    paths = RunPaths(out_dir)
    d.main_only(lambda: _prepare_folder(cfg, paths, restart))
    d.barrier()
    if paths.info.is_file() and _read_json(paths.info).get("status") == "complete":
        missing = [n for n in build_models(cfg).named()
                   if not paths.weight_file(n).is_file()]
        if not missing:
            if progress:
                log.info(f"{paths.root}: training already complete")
            return paths.root
        if not paths.checkpoint.is_file():
            raise RunError(f"{paths.root}: the run is complete but its final weights are "
                           f"missing ({', '.join(missing)}) and there is no checkpoint to "
                           "rebuild them from: restore them, or train again with --restart")
        # resuming from the last checkpoint rebuilds the same weights, byte for byte
        # (export would otherwise send the user back here in a loop; issue 37)
        log.info(f"{paths.root}: final weights missing ({', '.join(missing)}): rebuilding "
                 "them from the last checkpoint")
    threads = use_threads(cfg.threads)  # 0: the cores nobody else is busy on (threads.py)
    if progress and cfg.threads == 0:
        log.info(f"threads: {threads} (auto: free cores now; set threads=N to fix it)")
    device = d.device(resolve_device(cfg.device))
    try:
        roles = d.main_first(lambda: make_splits(cfg))  # rank 0 fills the data cache first
    except Exception:
        # bad data settings: leave no empty run folder behind (only an empty one goes)
        if d.is_main and paths.root.is_dir() and not any(paths.root.iterdir()):
            paths.root.rmdir()
        raise

    def write_run_files() -> None:
        check_splits_match(roles, paths.splits)  # the roles saved so far (none: nothing)
        if not all((paths.splits / f"{r}.json").is_file() for r in roles):
            # a new run, or a restart that kept a user's own files in splits/
            paths.splits.mkdir(parents=True, exist_ok=True)
            write_splits(roles, paths.splits)
        save_config(cfg, paths.config)
        _write_preprocessing(cfg, paths)

    d.main_only(write_run_files)
    return _Loop(cfg, paths, roles, device, progress, d).run()


def finish_from_checkpoint(cfg: Config, out_dir: Path, ckpt: dict,
                           progress: bool = False) -> Path:
    """A run of `cfg` in `out_dir` from another run's end-of-training checkpoint `ckpt`
    (the same phone training): only the finish phase runs, with `cfg`'s plan. For
    `choose-upload` (training/reuse.py); the folder must hold the source's splits."""
    paths = RunPaths(Path(out_dir))
    use_threads(cfg.threads)
    roles = make_splits(cfg)
    check_splits_match(roles, paths.splits)
    save_config(cfg, paths.config)
    _write_preprocessing(cfg, paths)
    loop = _Loop(cfg, paths, roles, resolve_device(cfg.device), progress)
    end = {"stage": len(loop.stages), "epoch": 0, "batch": 0}
    if ckpt["position"] != end:
        raise RunError(f"{paths.checkpoint} is not the end of training ({ckpt['position']}); "
                       "resume the run's training first")
    loop.restore(ckpt)
    loop.finish(finish_plan(cfg))
    return paths.root


def _prepare_folder(cfg: Config, paths: RunPaths, restart: bool) -> None:
    import yaml

    if restart:
        kept = paths.clear_for_restart()
        if kept:
            log.info(f"--restart: deleted the previous run's training files in {paths.root}; "
                  f"kept what train did not write: {', '.join(kept)}")
    paths.root.mkdir(parents=True, exist_ok=True)
    if paths.config.is_file():
        saved = config_from_dict(yaml.safe_load(paths.config.read_text()))
        if saved.fingerprint() != cfg.fingerprint():
            diff = _diff(saved.to_dict(), cfg.to_dict())
            raise RunError(
                f"{paths.root} holds a run with a different config ({'; '.join(diff[:5])}); "
                "train into a new --out folder, or pass --restart to overwrite it"
            )


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}: {va!r} -> {vb!r}")
    return out


def _read_json(path: Path) -> dict:
    import json

    return json.loads(path.read_text())


def _write_preprocessing(cfg: Config, paths: RunPaths) -> None:
    from ..data.factory import preprocess_from_config

    pre = preprocess_from_config(cfg.data).to_dict()
    pre["layout"] = "NCHW float32"
    pre["note"] = ("crop=square: centre-crop the largest square; none: keep the frame; "
                   "center:F / center:Npx: a centred square of side floor(F x shorter side "
                   "+ 0.5) / N px; then resize to size=[height, width], scale 0..255 to "
                   "0..1, RGB")
    if pre.get("align", "none") != "none":
        pre["note"] = ("align=mtcnn: first find the face (the largest) and warp it into "
                       "CelebA's 178 x 218 aligned frame (deepobfuscator.align); then "
                       + pre["note"])
    atomic_write_json(paths.preprocessing, pre)


@dataclass
class _Resume:
    """Where a checkpoint left training (the start, without one)."""

    position: dict = field(default_factory=lambda: {"stage": 0, "epoch": 0, "batch": 0})
    running: dict = field(default_factory=dict)
    optimizers: dict | None = None
    refit_mark: bool = False


class _Loop:
    def __init__(self, cfg: Config, paths: RunPaths, roles: dict[str, FaceDataset],
                 device: torch.device, progress: bool, d: Dist | None = None) -> None:
        self.cfg, self.paths, self.roles, self.device, self.progress = (
            cfg, paths, roles, device, progress)
        self.d = d or Dist()
        self.method = method_for(cfg)
        torch.manual_seed(cfg.seed)
        self.precision = resolve_precision(cfg.precision, device)
        self.layout = memory_format(cfg.channels_last)
        self.models = build_models(cfg).to(device)
        for module in self.models.named().values():
            module.to(memory_format=self.layout)  # type: ignore[call-overload]  # torch stubs
        self.sync = GradSync(self.d, self.models.named().values()) if self.d.enabled else None
        if self.d.rank > 0:  # own dropout masks and feature noise on each rank
            torch.manual_seed(int(np.random.SeedSequence([cfg.seed, self.d.rank])
                                  .generate_state(1)[0]))
        self.msssim = settings_for_size(*cfg.data.image_size)
        self.noise = fixed_noise_image((3, *cfg.data.image_size),
                                       cfg.privacy.paper.noise_seed).to(device)
        train = roles["defender_train"]
        self.images = torch.from_numpy(np.ascontiguousarray(train.images)).to(device)
        labels = task_set(cfg).labels(train)
        self.task = torch.from_numpy(labels).float().to(device)  # (N, T)
        self.task_priors = ([torch.from_numpy(w).float().to(device)
                             for w in task_set(cfg).log_priors(labels)]
                            if cfg.train.balance_tasks else None)
        cols = [train.attribute(k) for k in cfg.data.private]
        priv = np.stack(cols, 1) if cols else np.zeros((len(train), 0), dtype=np.int64)
        self.private = torch.from_numpy(priv).float().to(device)
        # the no-information reconstruction (robust method: reconstructions go no closer)
        self.mean_face = (self.images.float().mean(0).permute(2, 0, 1) / 255.0)[None]
        self.history: list[dict] = []
        self.timings: dict[str, float] = {}
        self.stages = stages_for(cfg)

    # -- the loop ---------------------------------------------------------------------
    def run(self) -> Path:
        """Train what the checkpoint has not, run the finish phase, write the run."""
        state = self.restore(load_checkpoint(self.paths.checkpoint)
                             if self.paths.checkpoint.is_file() else None)
        self.train_stages(state)
        self.finish(finish_plan(self.cfg, refit_mark=state.refit_mark))
        return self.paths.root

    def restore(self, ckpt: dict | None) -> _Resume:
        """Load a checkpoint's weights, RNG states, history and position."""
        if ckpt is None:
            return _Resume()
        if "gain_delta" in ckpt["models"]["encoder"] and ckpt["optimizers"]:
            # the gain was the encoder's first parameter then and is its last now, so the
            # optimizers' states would land on the wrong weights
            raise RunError(f"{self.paths.checkpoint} stopped mid-training with code from "
                           "before 2026-12-07, when the upload's defences moved to defences/ "
                           "(CHANGELOG.md); finish it with that code, or pass --restart to "
                           "train it again")
        for name, module in self.models.named().items():
            module.load_state_dict(ckpt["models"][name])
        self.history, self.timings = list(ckpt["history"]), dict(ckpt["timings"])
        ranks = ckpt.get("rng_ranks") or []
        if len(ranks) == self.d.world:
            set_rng_state(ranks[self.d.rank])
        elif self.d.is_main:
            set_rng_state(ckpt["rng"])
        state = _Resume(dict(ckpt["position"]),
                        # rank 0 holds the summed losses of all ranks so far
                        dict(ckpt["running"]) if self.d.is_main else {},
                        ckpt["optimizers"],
                        # the mark of runs from before train.refit_cloud existed
                        bool(ckpt.get("refit_cloud")))
        if self.progress:
            pos = state.position
            log.info(f"resuming {self.paths.root} at stage {self.stages[pos['stage']]}, "
                     f"epoch {pos['epoch']}, batch {pos['batch']}"
                     if pos["stage"] < len(self.stages) else
                     f"resuming {self.paths.root} after its last stage")
        return state

    def train_stages(self, state: _Resume) -> None:
        cfg, stages = self.cfg, self.stages
        pos, running, opt_state = state.position, state.running, state.optimizers
        for s_idx in range(pos["stage"], len(stages)):
            stage = stages[s_idx]
            scfg: StageConfig = getattr(cfg.train, stage)  # train.<stage>
            optimizers = self.stage_optimizers(stage, scfg.lr)
            if opt_state:  # {} at a stage boundary: the next stage starts fresh optimizers
                for name, opt in optimizers.items():
                    opt.load_state_dict(opt_state[name])
                opt_state = None
            else:
                self.method.begin_stage(cfg, self.models, stage)
            self.broadcast_models()  # every rank starts each stage from rank 0's weights
            ctx = StepContext(cfg, self.models, optimizers, self.msssim, self.noise,
                              amp=lambda: autocast(self.precision, self.device),
                              task_priors=self.task_priors, sync_grads=self.sync)
            start_epoch = pos["epoch"] if s_idx == pos["stage"] else 0
            for epoch in range(start_epoch, scfg.epochs):
                first_batch = pos["batch"] if (s_idx, epoch) == (pos["stage"], pos["epoch"]) else 0
                if first_batch == 0:
                    running = {}
                    if stage == "adversarial" and self.method.refresh(self, ctx, s_idx,
                                                                      epoch, scfg):
                        self.broadcast_models()  # fresh attackers drawn on rank 0
                t0 = time.time()
                self._epoch(ctx, s_idx, stage, epoch, scfg, first_batch, running)
                self.timings[stage] = self.timings.get(stage, 0.0) + time.time() - t0
                running = self.d.sum_counts(running)
                if self.d.is_main:  # the others go straight on to the next collective
                    self._record(stage, epoch, running)
                nxt = ({"stage": s_idx, "epoch": epoch + 1, "batch": 0}
                       if epoch + 1 < scfg.epochs else {"stage": s_idx + 1, "epoch": 0, "batch": 0})
                self._checkpoint(nxt, {}, {} if nxt["stage"] != s_idx else optimizers)

    def finish(self, plan: FinishPlan) -> None:
        """The finish phase (training/finish.py), then the run's final files."""
        record = run_finish(self, plan)
        if record is not None and self.d.is_main:
            self.history.append({**history_record(self.cfg, record),
                                 **self._validation(self.stages[-1])})
        self._write_run(record)

    def order(self, scfg, s_idx: int, epoch: int, stream: int = 0):
        """(batch order, this rank's images per batch, batches per epoch): a pure function
        of (seed, stage, epoch, stream); stream 0 is the stage's own batches."""
        n, world = len(self.images), self.d.world
        key = [self.cfg.seed, s_idx, epoch] + ([stream] if stream else [])
        order = np.random.default_rng(key).permutation(n)
        per = min(scfg.batch_size, n) // world  # this rank's slice of each global batch
        return order, per, n // (max(per, 1) * world)

    def batch(self, order: np.ndarray, per: int, b: int) -> Batch:
        world = self.d.world
        rows = shard(order, per * world, world, self.d.rank, b)
        idx = torch.from_numpy(rows).to(self.device)
        x = self.images[idx].permute(0, 3, 1, 2).float().div_(255.0)
        if self.cfg.data.augment == "photo":  # data.augment: varied like real photos
            x = augment.photo(x, augment.generator(self.cfg.seed, rows))
        return Batch(x.contiguous(memory_format=self.layout), self.task[idx], self.private[idx])

    def _record(self, stage: Stage, epoch: int, running: dict[str, float]) -> None:
        cfg = self.cfg
        record = {"stage": stage, "epoch": epoch, **_means(running)}
        record.update(self.method.record(cfg, stage, epoch))
        record.update(self._validation(stage))
        self.history.append(record)
        if self.progress:
            tqdm.write(_format_record(record))

    def _validation(self, stage: Stage) -> dict[str, float]:
        cfg = self.cfg
        return evaluate(
            self.models, self.roles["defender_val"], task_set(cfg), cfg.data.private,
            stage, self.msssim, self.device, max_images=cfg.train.eval_max_images,
            amp=lambda: autocast(self.precision, self.device),
            attackers=self.method.trains_attackers(cfg))

    def broadcast_models(self) -> None:
        for module in self.models.named().values():
            self.d.broadcast_module(module)

    def _epoch(self, ctx: StepContext, s_idx: int, stage: Stage, epoch: int, scfg,
               first_batch: int, running: dict[str, float]) -> None:
        cfg, world = self.cfg, self.d.world
        order, per, n_batches = self.order(scfg, s_idx, epoch)
        if per < 2:
            raise RunError(f"train.{stage}.batch_size={scfg.batch_size} over {world} processes "
                           f"leaves {per} image(s) per process; BatchNorm needs at least 2")
        # full batches only: BatchNorm needs > 1 sample
        step = self.epoch_steps(ctx, stage, s_idx, epoch, scfg)
        last_save = time.time()
        bar = tqdm(range(first_batch, n_batches), total=n_batches, initial=first_batch,
                   desc=f"{stage} {epoch + 1}/{scfg.epochs}", unit="batch", leave=False,
                   disable=not self.progress, mininterval=1.0)
        for b in bar:
            if scfg.lr_schedule == "cosine":
                set_lr_fraction(ctx.optimizers, cosine_fraction(epoch, b, n_batches, scfg.epochs))
            losses = step(b, self.batch(order, per, b))
            for k, v in losses.items():
                running[f"sum:{k}"] = running.get(f"sum:{k}", 0.0) + v
                running[f"n:{k}"] = running.get(f"n:{k}", 0) + 1
            if self.progress and b % 10 == 0:
                bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()})
            due = time.time() - last_save > cfg.train.checkpoint_every_s and b + 1 < n_batches
            if self.d.enabled:  # rank 0's clock decides, so every rank joins the checkpoint
                due = self.d.any(due and self.d.is_main)
            if due:
                merged = self.d.sum_counts(running)
                running.clear()
                running.update(merged)
                self._checkpoint({"stage": s_idx, "epoch": epoch, "batch": b + 1},
                                 running, ctx.optimizers)
                last_save = time.time()

    def stage_optimizers(self, stage: Stage, lr: float) -> dict[str, torch.optim.Optimizer]:
        """Fresh optimizers of a stage: the task stage is the same for every method."""
        if stage == "task":
            return make_optimizers(self.models, stage, lr)
        return self.method.optimizers(self.models, stage, lr, self.cfg)

    def epoch_steps(self, ctx: StepContext, stage: Stage, s_idx: int, epoch: int,
                    scfg: StageConfig) -> StepFn:
        """The step function of one epoch: the task stage is the same for every method."""
        if stage == "task":
            warmup = self.cfg.privacy.noise_warmup
            if warmup <= 0 or self.cfg.privacy.feature_noise <= 0:
                return lambda b, batch: task_step(ctx, batch)
            n_batches = self.order(scfg, s_idx, epoch)[2]
            encoder = self.models.encoder
            # a stage shorter than the warm-up ramps over all of it: it never ends below the
            # full noise the later stages and every upload use
            warmup = min(warmup, scfg.epochs)

            def warm_step(b: int, batch: Batch) -> dict[str, float]:
                # a pure function of the position, so a resumed run ramps identically
                with scaled_noise(encoder, min(1.0, (epoch + b / n_batches) / warmup)):
                    return task_step(ctx, batch)
            return warm_step
        return self.method.epoch_steps(self, ctx, stage, s_idx, epoch, scfg)

    def _checkpoint(self, position: dict, running: dict, optimizers: dict) -> None:
        """Collective under torchrun (every rank's RNG state is saved); rank 0 writes."""
        rngs = self.d.gather_objects(rng_state()) if self.d.enabled else None
        if not self.d.is_main:
            return
        save_checkpoint(self.paths.checkpoint, {
            "config": self.cfg.to_dict(),
            "position": position,
            "running": running,
            "models": {n: m.state_dict() for n, m in self.models.named().items()},
            "optimizers": {n: o.state_dict() for n, o in optimizers.items()},
            "rng": rng_state(),
            **({"rng_ranks": rngs} if rngs else {}),
            "history": self.history,
            "timings": self.timings,
        })
        atomic_write_text(self.paths.metrics,
                          "".join(_json_line(r) for r in self.history))

    def _write_run(self, finish: FinishRecord | None) -> None:
        from safetensors.torch import save_file

        from ..io import atomic_write

        dist_info: dict[str, object] = {"world_size": self.d.world}
        if self.d.enabled:
            sums = self.d.gather_objects(state_checksum(self.models.named()))
            if len(set(sums)) != 1:
                raise RuntimeError(f"data-parallel ranks ended with different weights "
                                   f"(checksums {sums}); this is a bug, please report it")
            dist_info.update(ranks_identical=True, backend=self.d.backend)
        if not self.d.is_main:
            self.d.barrier()  # wait until rank 0 has written the run
            return
        for name, module in self.models.named().items():
            state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
            def write(tmp: Path, s: dict = state) -> None:
                save_file(s, str(tmp))

            atomic_write(self.paths.weight_file(name), write)
        atomic_write_text(self.paths.metrics, "".join(_json_line(r) for r in self.history))
        atomic_write_json(self.paths.info, {
            "status": "complete",
            "stages": list(stages_for(self.cfg)),
            "feature_shape": list(feature_shape(self.cfg)),
            "budget": phone_budget(self.cfg).to_dict(),
            "input_shape": [3, *self.cfg.data.image_size],
            "config_fingerprint": self.cfg.fingerprint(),
            "splits": split_summary(self.roles, [*task_set(self.cfg).binary_attributes,
                                                 *self.cfg.data.private]),
            "stage_seconds": {k: round(v, 2) for k, v in self.timings.items()},
            "final": self.history[-1] if self.history else {},
            "finish": finish.to_dict() if finish is not None else {"plan": [], "steps": {}},
            "versions": versions(),
            "device": str(self.device),
            "precision": self.precision,
            **dist_info,
        })
        self.d.barrier()


def _means(running: dict[str, float]) -> dict[str, float]:
    """Per-epoch mean of each training loss (each rotation step logs its own keys)."""
    return {k[4:]: round(v / running[f"n:{k[4:]}"], 5)
            for k, v in running.items() if k.startswith("sum:")}


def _json_line(record: dict) -> str:
    import json

    return json.dumps(record) + "\n"


def _format_record(r: dict) -> str:
    parts = [f"{r['stage']} epoch {r['epoch'] + 1}:"]
    parts += [f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
              for k, v in r.items() if k not in ("stage", "epoch")]
    return " ".join(parts)
