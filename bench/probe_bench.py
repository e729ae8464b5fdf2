"""How the linear probe's cost grows with the number of rows: seeded synthetic data, one fit each.

``featbench probe-bench --rows 10000,100000 --dim 1280 --classes 1000 [--device cpu|cuda]
[--max-iter N]`` draws ``n`` rows of ``dim`` features around ``classes`` random class means
(float32, seed 0), fits multinomial logistic regression at ``C`` with :mod:`featbench.probe`
(row blocks bound the memory of the logits), and reports per size: seconds for the data's
basis (``Z^T Z``, its eigendecomposition and the rotation of the rows), seconds for the fit,
Newton iterations and Hessian-vector products (conjugate-gradient steps, most of the work), seconds
per iteration, the fit's process CPU seconds (on a shared machine wall time mostly measures the
neighbours), whether it converged, and peak memory (host RSS; on CUDA also the device's peak
allocation). With ``--max-iter`` small, a fit stops early and the table gives the time per
iteration to extrapolate from (a full fit takes about ten Newton iterations; see ``n_iter``). The
Newton step keeps the n x k class probabilities of its point (float32), the one memory term that
grows with n beyond the data.
"""
from __future__ import annotations

import resource
import sys
import time
from typing import Any

import numpy as np
import torch

from featbench import probe


def synthetic(n: int, dim: int, classes: int, seed: int = 0, spread: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """``n`` rows, labels cycling through the classes, features = class mean + unit noise (float32)."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((classes, dim), dtype=np.float32) * spread
    y = np.arange(n) % classes
    X = rng.standard_normal((n, dim), dtype=np.float32)
    X += means[y]
    return X, y


def peak_rss_mb() -> float:
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def bench_one(n: int, dim: int, classes: int, device: str = "cpu", C: float = 1.0, tol: float = probe.DEFAULT_TOL,
              max_iter: int = probe.DEFAULT_MAX_ITER, block_rows: int | None = None) -> dict[str, Any]:
    dev = probe.resolve_device(device)
    X, y = synthetic(n, dim, classes)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    start = time.perf_counter()
    problem = probe.Problem(torch.from_numpy(X), y, classes, device=dev, block_rows=block_rows)
    _sync(dev)
    basis_s = time.perf_counter() - start
    start, cpu_start = time.perf_counter(), time.process_time()
    sol = problem.solve(C, tol=tol, max_iter=max_iter)
    _sync(dev)
    fit_s, fit_cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
    row = {"n": n, "dim": dim, "classes": classes, "device": str(dev), "threads": torch.get_num_threads(),
           "block_rows": problem.block_rows, "basis_s": round(basis_s, 3), "fit_s": round(fit_s, 3), "fit_cpu_s": round(fit_cpu_s, 3),
           "n_iter": sol.n_iter, "n_hess": sol.n_hess, "s_per_iter": round(fit_s / max(sol.n_iter, 1), 4), "converged": sol.converged,
           "grad_max": float(f"{sol.grad_max:.3g}"), "peak_rss_mb": round(peak_rss_mb())}
    if dev.type == "cuda":
        row["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated(dev) / 2**20)
    return row


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def markdown(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def run(sizes: list[int], dim: int, classes: int, device: str = "cpu", C: float = 1.0,
        tol: float = probe.DEFAULT_TOL, max_iter: int = probe.DEFAULT_MAX_ITER, echo=print) -> list[dict[str, Any]]:
    """Sizes in increasing order, so each row's peak RSS is (to within freed memory) its own."""
    rows = []
    for n in sorted(sizes):
        rows.append(bench_one(n, dim, classes, device=device, C=C, tol=tol, max_iter=max_iter))
        echo(f"n={n}: {rows[-1]}")
    return rows
