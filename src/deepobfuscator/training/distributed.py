"""Data-parallel training on PyTorch's own engine (torch.distributed), launched by torchrun.

    torchrun --nproc-per-node 2 -m deepobfuscator train --out runs/x [key=value ...]

With WORLD_SIZE > 1 in the environment (torchrun sets it, with RANK, LOCAL_RANK,
MASTER_ADDR and MASTER_PORT) `Dist.from_env()` joins the process group: gloo on
CPU, NCCL on CUDA (one GPU per process, chosen by LOCAL_RANK). Without it every
helper here is a no-op, so single-process training runs the very same code.

What each process does (see training/trainer.py):
  * the epoch's permutation is a pure function of (seed, stage, epoch) and each
    global batch of `batch_size` images is cut into `world` disjoint slices of
    `batch_size // world`, one per rank: the global batch is the single-process one;
  * after every backward pass the gradients of the networks about to step, and the
    BatchNorm running statistics that the step's forward pass moved, are averaged
    over ranks in one all-reduce (`GradSync`), so weights, optimizer states and
    BatchNorm statistics stay identical on every rank after every step;
  * only rank 0 evaluates and writes files; the others wait at barriers.

Multi-node runs need nothing special: use torchrun's rendezvous flags
(`--nnodes 2 --node-rank K --rdzv-endpoint HOST:PORT`, or `--rdzv-backend c10d`).
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import torch
import torch.distributed as dist
from torch import nn

T = TypeVar("T")


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


@dataclass
class Dist:
    """Where this process stands in the group; trivial (rank 0 of 1) without torchrun."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str = ""
    owns_group: bool = False  # we created the process group, so we destroy it

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> Dist:
        """Join the process group described by torchrun's environment variables."""
        if env_world_size() <= 1:
            return cls()
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        owns = False
        if not dist.is_initialized():
            if torch.cuda.is_available():
                torch.cuda.set_device(local_rank % torch.cuda.device_count())
                backend = "nccl"
            else:
                backend = "gloo"
            dist.init_process_group(backend=backend)
            owns = True
        return cls(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local_rank,
                   backend=str(dist.get_backend()), owns_group=owns)

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False

    def device(self, device: torch.device) -> torch.device:
        """One GPU per process: `cuda` becomes `cuda:LOCAL_RANK`."""
        if self.enabled and device.type == "cuda" and device.index is None:
            return torch.device("cuda", self.local_rank % torch.cuda.device_count())
        return device

    # -- collectives (no-ops in a single process) -------------------------------------
    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def broadcast_object(self, obj: Any = None) -> Any:
        """Rank 0's `obj`, on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def any(self, flag: bool) -> bool:
        """True on every rank if `flag` is true on any rank."""
        if not self.enabled:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self._comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def broadcast_module(self, module: nn.Module) -> None:
        """Copy rank 0's parameters and buffers into every rank's `module`."""
        if not self.enabled:
            return
        for t in [*module.parameters(), *module.buffers()]:
            data = t.detach()
            if data.is_contiguous():
                dist.broadcast(data, src=0)
            else:  # channels_last weights: broadcast a contiguous copy, then copy back
                tmp = data.contiguous()
                dist.broadcast(tmp, src=0)
                data.copy_(tmp)

    def main_only(self, fn: Callable[[], T]) -> T | None:
        """Run `fn` on rank 0 only (the others get None); its exception, if it raises,
        is raised on every rank, so none is left waiting at the next collective."""
        result, error = None, None
        if self.is_main:
            try:
                result = fn()
            except Exception as exc:  # re-raised below, on every rank
                error = exc
        if self.enabled:
            sent = self.broadcast_object(_picklable(error) if self.is_main else None)
            error = error if self.is_main else sent
        if error is not None:
            raise error
        return result

    def main_first(self, fn: Callable[[], T]) -> T:
        """Run `fn` on rank 0, then on the others (e.g. rank 0 fills a cache they read)."""
        first = self.main_only(fn)
        if self.is_main:
            return cast(T, first)  # rank 0 ran fn: its result (None only if fn's was)
        return fn()

    def sum_counts(self, running: dict[str, float]) -> dict[str, float]:
        """Sum per-rank loss sums/counts into rank 0's dict; the others get {}."""
        if not self.enabled:
            return dict(running)
        total: dict[str, float] = {}
        for part in self.gather_objects(dict(running)):
            for k, v in part.items():
                total[k] = total.get(k, 0.0) + v
        return total if self.is_main else {}

    def _comm_device(self) -> torch.device:
        return torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl" \
            else torch.device("cpu")


class GradSync:
    """The step functions' `sync_grads` hook: average gradients and moved BatchNorm
    statistics over ranks, in one flat all-reduce per optimizer step."""

    def __init__(self, d: Dist, networks: Iterable[nn.Module]) -> None:
        self.d = d
        self.norms = [m for net in networks for m in net.modules()
                      if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]

    def __call__(self, optimizers: Iterable[torch.optim.Optimizer]) -> None:
        if not self.d.enabled:
            return
        tensors = [p.grad for opt in optimizers for g in opt.param_groups for p in g["params"]
                   if p.grad is not None]
        # only the norms a train-mode forward pass just moved (the same set on every rank)
        tensors += [b for m in self.norms if m.training
                    for b in (m.running_mean, m.running_var) if b is not None]
        if not tensors:
            return
        flat = torch.cat([t.detach().reshape(-1).float() for t in tensors])
        dist.all_reduce(flat)
        flat /= self.d.world
        offset = 0
        for t in tensors:
            n = t.numel()
            t.detach().copy_(flat[offset:offset + n].view(t.shape))
            offset += n


def _picklable(exc: Exception | None) -> Exception | None:
    if exc is None:
        return None
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"on rank 0: {exc.__class__.__name__}: {exc}")


def state_checksum(modules: dict[str, nn.Module]) -> str:
    """sha256 over every parameter and buffer, in a fixed order (layout-independent)."""
    h = hashlib.sha256()
    for name in sorted(modules):
        for key, t in sorted(modules[name].state_dict().items()):
            h.update(f"{name}.{key}".encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes()
                     if t.dtype != torch.bfloat16 else t.float().cpu().numpy().tobytes())
    return h.hexdigest()


def shard(order, batch: int, world: int, rank: int, b: int):
    """Rank `rank`'s slice of global batch `b`: `per = batch // world` images."""
    per = batch // world
    start = b * per * world + rank * per
    return order[start:start + per]
