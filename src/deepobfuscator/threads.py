"""How many CPU threads a command computes with: never more than the cores nobody else uses.

With OpenMP (torch) and onnxruntime, every parallel region waits for its slowest thread.
When another process holds a core, a thread on that core runs a fraction of the time and
the whole region waits for it: on 2 cores with one competing process, 2 torch threads
ran a task stage 15x slower than 1 (the hardening issue's measurement). So `threads: 0`
(the default, `--threads 0`) means: the cores this process may use, minus the cores other
processes are busy on right now (sampled for a fraction of a second from /proc/stat),
shared between the processes of a local torchrun, and at least 1. An explicit count is
used as given.
"""

from __future__ import annotations

import os
import time

from .errors import UserError

SAMPLE_SECONDS = 0.3


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask, e.g. a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _cpu_times() -> tuple[float, float] | None:
    """(busy, total) jiffies of all cores from /proc/stat; None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    v = [float(x) for x in fields[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0.0)  # idle + iowait
    return sum(v[:8]) - idle, sum(v[:8])


def busy_elsewhere(seconds: float = SAMPLE_SECONDS) -> float:
    """Cores' worth of CPU that other processes used over the last `seconds` (0 if unknown).
    This process only waits meanwhile, so what the machine did, others did."""
    a = _cpu_times()
    own0 = time.process_time()
    time.sleep(seconds)
    b = _cpu_times()
    own = time.process_time() - own0
    if a is None or b is None or b[1] <= a[1]:
        return 0.0
    cores = os.cpu_count() or 1
    busy = (b[0] - a[0]) / (b[1] - a[1]) * cores  # cores busy on the whole machine
    return max(0.0, busy - own / seconds)


def auto_threads(local_processes: int = 1) -> int:
    """Free cores per process of this job: usable cores minus those busy elsewhere."""
    cores = usable_cores()
    free = cores - int(busy_elsewhere() + 0.5)
    return max(1, min(cores, free) // max(1, local_processes))


def resolve_threads(requested: int) -> int:
    """requested > 0: itself; 0: auto_threads for this process (torchrun: its share)."""
    if requested < 0:
        raise UserError(f"threads={requested}: use 0 (auto) or a positive count")
    if requested > 0:
        return requested
    return auto_threads(int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))


def use_threads(requested: int) -> int:
    """Set torch's intra-op thread count (resolve_threads) and return it."""
    import torch

    n = resolve_threads(requested)
    torch.set_num_threads(n)
    return n
