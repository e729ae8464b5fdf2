"""``featbench speed``'s timer: end to end, per stage and the model alone, through the extractor's
public hooks only (``transform_outputs``, ``speed_stages``, ``speed_synthetic``).

Wall time is ``time.perf_counter`` read by :func:`now`, which first waits for queued GPU work on
CUDA; the synthetic forward pass on CUDA is timed with CUDA events. Latency is per image (ms):
median and interquartile range over the timed passes (:func:`percentile_stats`).
"""
from __future__ import annotations

import math
import os
import statistics
import time
from collections import OrderedDict
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from featbench.datasets.folder import ImageRecord
from featbench.datasets.images import decode_bytes

STAGES = ("read", "decode", "preprocess", "transfer", "extract", "encode")
STAGE_COLUMNS = tuple(f"{s}_ms" for s in STAGES)


def threads_info() -> dict[str, Any]:
    """Thread settings that change speed: torch intra/inter-op, OpenCV, OpenMP/BLAS env, faiss."""
    import cv2
    import torch

    info: dict[str, Any] = {"torch_threads": torch.get_num_threads(),
                            "torch_interop_threads": torch.get_num_interop_threads(),
                            "cv2_threads": cv2.getNumThreads()}
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        info[var] = os.environ.get(var, "unset")
    try:
        import faiss

        info["faiss_omp_threads"] = faiss.omp_get_max_threads()
    except Exception:  # faiss missing or built without OpenMP
        pass
    return info


def is_cuda(device: str) -> bool:
    return str(device).startswith("cuda")


def synchronize(device: str) -> None:
    """Wait for queued GPU work so that a wall-clock reading covers it (no-op on CPU)."""
    if is_cuda(device):
        import torch

        torch.cuda.synchronize(device)


def now(device: str) -> float:
    synchronize(device)
    return time.perf_counter()


def percentile_stats(values: Sequence[float]) -> tuple[float, float]:
    """``(median, interquartile range)``; IQR is 0 for a single value, NaN for none."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return float("nan"), float("nan")
    q25, q50, q75 = np.percentile(vals, [25, 50, 75])
    return float(q50), float(q75 - q25)


def _chunks(seq: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(seq), max(1, size)):
        yield seq[i:i + size]


# ----------------------------------------------------------------------------- stage plans

StageFn = Callable[[Any], Any]


def stage_plan(ex: Any, device: str) -> tuple["OrderedDict[str, StageFn]", str]:
    """Ordered stage functions for ``ex`` (its ``speed_stages`` hook) and where they came from."""
    plan = ex.speed_stages(device)
    if plan:
        return OrderedDict(plan), "hook"
    return OrderedDict(extract=lambda images: ex.transform_outputs(list(images))), "whole"


def measure_e2e(ex: Any, records: Sequence[ImageRecord], device: str, bs: int, repeats: int, warmup: int,
                chunked: bool = False) -> dict[str, float]:
    """Extraction from file records: one ``transform_outputs`` call on all of them (the
    extractor's own pipeline), or with ``chunked`` one call per ``bs`` records (the runner's way)."""
    per_image, batch_times = [], []
    for r in range(warmup + repeats):
        calls = []
        start = now(device)
        for chunk in (_chunks(records, bs) if chunked else [records]):
            t0 = time.perf_counter()
            ex.transform_outputs(list(chunk))
            calls.append(now(device) - t0)
        total = now(device) - start
        if r >= warmup:
            per_image.append(1000.0 * total / len(records))
            batch_times += calls
    p50, iqr = percentile_stats(per_image)
    return {"latency_ms_p50": p50, "latency_ms_iqr": iqr, "img_per_s": 1000.0 / p50 if p50 > 0 else float("nan"),
            "batch_latency_ms_p50": (1000.0 * statistics.median(batch_times)) if chunked and batch_times
            else float("nan")}


def measure_stages(ex: Any, records: Sequence[ImageRecord], device: str, bs: int, repeats: int, warmup: int
                   ) -> dict[str, Any]:
    """Instrumented pass: each stage timed on its own, fed the previous stage's ready output."""
    plan, source = stage_plan(ex, device)
    decode = plan.pop("decode", None) or (lambda blob, rec: decode_bytes(blob, rec.relpath))
    file_backed = all(r.path for r in records)
    per_stage: dict[str, list[float]] = {s: [] for s in STAGES}
    totals = []
    n = len(records)
    for r in range(warmup + repeats):
        t: dict[str, float] = {}
        if file_backed:
            t0 = time.perf_counter()
            blobs = []
            for rec in records:
                with open(rec.path, "rb") as fh:
                    blobs.append(fh.read())
            t["read"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            images = [decode(b, rec) for b, rec in zip(blobs, records)]
            t["decode"] = time.perf_counter() - t0
        else:  # in-memory images: nothing to read or decode
            images = [rec.load() for rec in records]
        for chunk in _chunks(images, bs):
            value: Any = list(chunk)
            for stage, fn in plan.items():
                t0 = now(device)
                value = fn(value)
                t[stage] = t.get(stage, 0.0) + (now(device) - t0)
        if r >= warmup:
            for stage in STAGES:
                if stage in t:
                    per_stage[stage].append(1000.0 * t[stage] / n)
            totals.append(1000.0 * sum(t.values()) / n)
    out: dict[str, Any] = {"stage_source": source}
    for stage in STAGES:
        if per_stage[stage]:
            out[f"{stage}_ms"] = statistics.median(per_stage[stage])
        elif stage == "transfer" and not is_cuda(device):
            out["transfer_ms"] = 0.0  # nothing crosses a bus on the CPU
    p50, iqr = percentile_stats(totals)  # of whole instrumented passes
    out.update(latency_ms_p50=p50, latency_ms_iqr=iqr, img_per_s=1000.0 / p50 if p50 > 0 else float("nan"),
               stage_total_ms=sum(v for k, v in out.items() if k in STAGE_COLUMNS))  # the columns add up
    if not file_backed:
        out["note"] = "in-memory images: read and decode not measured"
    return out


def measure_synthetic(ex: Any, records: Sequence[ImageRecord], device: str, bs: int, repeats: int, warmup: int
                      ) -> dict[str, Any] | None:
    """The model alone on a ready batch already on ``device``; None when ``ex`` has no model hook.

    Uses ``ex.speed_synthetic(device, batch_size, images)``, which must return a callable
    running one forward pass (+ pooling) on a prepared on-device batch of ``batch_size``.
    """
    if not getattr(ex, "uses_torch", False):
        return None
    images = [rec.load() for rec in records[:bs]]
    while len(images) < bs:  # fewer images than the batch: repeat them
        images += images[: bs - len(images)]
    step = ex.speed_synthetic(device, bs, images)
    if step is None:
        return None
    per_image = []
    use_events = is_cuda(device)
    if use_events:
        import torch
    for r in range(warmup + repeats):
        if use_events:
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            synchronize(device)
            begin.record()
            step()
            end.record()
            end.synchronize()
            ms = begin.elapsed_time(end)
        else:
            t0 = time.perf_counter()
            step()
            ms = 1000.0 * (time.perf_counter() - t0)
        if r >= warmup:
            per_image.append(ms / bs)
    p50, iqr = percentile_stats(per_image)
    return {"latency_ms_p50": p50, "latency_ms_iqr": iqr, "img_per_s": 1000.0 / p50 if p50 > 0 else float("nan"),
            "batch_latency_ms_p50": p50 * bs}
