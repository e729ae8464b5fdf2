"""How many DataLoader decode workers and torch threads a CNN extractor uses by default.

The rule, from the cores this process may run on (``os.sched_getaffinity``, else ``os.cpu_count``):

* CUDA: the network runs on the GPU, so the CPU only decodes and resizes: ``min(8, cores)``
  workers; torch's threads are left as they are.
* CPU: the forward pass gets ``threads = cores`` below 4 cores and ``cores - ceil(cores / 8)``
  from 4 cores on, never more than ``OMP_NUM_THREADS`` when that is set. Decode workers run only
  on cores the forward leaves free: ``workers = min(cores - threads, ceil(cores / 8))``, and 0
  (decoding in the main process, between forward passes) when it leaves none.

Why: decoding and resizing an image costs about a tenth of EfficientNet-Lite0's forward pass in
core time (Office-Caltech-10 photos), so one worker keeps up with about eight forward threads.
A worker that shares the forward's cores preempts its threads and each parallel region waits for
the preempted one; on two cores that costs more than decoding inline (README, "Speed", has the
measurements). From 4 cores a core of its own for the worker costs the forward less than decoding
inline does. Explicit ``num_workers`` / ``threads`` (``--workers``, ``--threads``) always win.
"""
from __future__ import annotations

import math
import os


def available_cores() -> int:
    """The CPUs this process may run on (its affinity mask), else the machine's CPU count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no sched_getaffinity on macOS / Windows
        return max(1, os.cpu_count() or 1)


def _env_threads() -> int | None:
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else None


def runtime_layout(device: str, num_workers: int | None = None, threads: int | None = None,
                   cores: int | None = None) -> tuple[int, int | None]:
    """``(num_workers, threads)`` for ``device`` by the rule above; given values are kept.
    ``threads`` None means "leave torch's setting alone" (CUDA only)."""
    cores = cores or available_cores()
    if device.startswith("cuda"):
        return (min(8, cores) if num_workers is None else num_workers), threads
    decode_share = math.ceil(cores / 8)
    if threads is None:
        threads = cores if cores < 4 else cores - decode_share
        threads = min(threads, _env_threads() or threads)
    if num_workers is None:
        num_workers = max(0, min(cores - threads, decode_share))
    return num_workers, threads


__all__ = ["available_cores", "runtime_layout"]
