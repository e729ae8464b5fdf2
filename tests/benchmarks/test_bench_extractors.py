"""pytest-benchmark suite: every registered extractor on the same 16 real images, end to end.

Skipped in the default test run (``addopts`` has ``--benchmark-skip``). Run::

    pytest tests/benchmarks --benchmark-only

Speed history and regression checks across commits are ``featbench speed --compare``'s (one
history, keyed by commit and machine); this suite only times and checks ratios within one run.

One round = ``transform_outputs`` on all 16 file records (read, decode, extract, encode),
after ``configure_runtime(device="cpu", batch_size=16)``; learned extractors are fitted on
16 other images of the set beforehand (fit time goes to ``extra_info``, not into the timing).
The images come from :func:`featbench.speed.speed_images`: ``office_caltech10`` under the data
roots when present (``$FEATBENCH_DATA``, ``../shared/datasets``), else a shared mini dataset,
else 16 photos shipped inside scikit-image, so saved runs compare only when the same set was
used (``extra_info["dataset"]``). Extractors listed by ``cnn`` use the specs of
the examples registered with ``cnn`` (``featbench.features.base.example_specs``); one whose weights are missing is skipped with the reason.
``FEATBENCH_BENCH_DEVICE=cuda`` runs the torch extractors on the GPU.
"""
from __future__ import annotations

import os
import time

import pytest

from featbench.errors import WeightsUnavailableError
from featbench.features import create
from featbench.speed import default_specs, speed_images

N_IMAGES = 16
ROUNDS = int(os.environ.get("FEATBENCH_BENCH_ROUNDS", "3"))
DEVICE = os.environ.get("FEATBENCH_BENCH_DEVICE", "cpu")


@pytest.fixture(scope="session")
def image_set():
    from featbench.runner import default_data_roots

    return speed_images(N_IMAGES, default_data_roots(), n_fit=N_IMAGES)


@pytest.fixture(scope="module")
def prepared():
    """Built (and fitted) extractors by spec, kept across rounds; missing weights kept to skip with."""
    return {}


def _prepare(spec, image_set, prepared):
    if spec in prepared:
        return prepared[spec]
    name, timed, fit = image_set
    try:
        ex = create(spec)
        device = DEVICE if getattr(ex, "uses_torch", False) else "cpu"
        ex.configure_runtime(device=device, batch_size=N_IMAGES)
        fit_s = 0.0
        if ex.learns:
            t0 = time.perf_counter()
            ex.fit(fit, [r.label for r in fit], image_ids=[r.uid for r in fit], seed=0)
            fit_s = time.perf_counter() - t0
        ex.transform_outputs(timed[:2])  # builds lazily-built parts (a CNN's network) untimed
        prepared[spec] = (ex, device, fit_s, None)
    except WeightsUnavailableError as exc:  # CNN weights not on this machine: the one reason to skip
        prepared[spec] = (None, None, None, f"{type(exc).__name__}: {exc}")
    return prepared[spec]


@pytest.mark.parametrize("spec", default_specs())
def test_extractor_speed(benchmark, spec, image_set, prepared):
    ex, device, fit_s, error = _prepare(spec, image_set, prepared)
    if error:
        pytest.skip(f"{spec}: {error}")
    name, timed, _ = image_set
    benchmark.group = f"extractors ({name}, {len(timed)} images, {device})"
    benchmark.extra_info.update(dataset=name, n_images=len(timed), device=device, fit_s=round(fit_s, 3),
                                spec=spec)
    out = benchmark.pedantic(ex.transform_outputs, args=(list(timed),), rounds=ROUNDS, warmup_rounds=1,
                             iterations=1)
    assert all(len(v) == len(timed) for v in out.values())
    benchmark.extra_info["img_per_s_median"] = round(len(timed) / benchmark.stats.stats.median, 3)
