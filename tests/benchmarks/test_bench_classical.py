"""pytest-benchmark timings of every registered classical extractor on fixed real photos.

Skipped in the default test run (``addopts`` has ``--benchmark-skip``). Run::

    pytest tests/benchmarks/test_bench_classical.py --benchmark-only

Speed history and regression checks across commits are ``featbench speed --compare``'s (one
history, keyed by commit and machine); this suite only times and checks ratios within one run.

The image set is 12 photos shipped inside scikit-image (so every machine times the same
pixels), as RGB ``uint8``. Three timings per extractor, all with its default options:

* ``test_describe``: the local-descriptor stage alone on the 12 photos (one thread);
* ``test_fit``: ``fit`` on the 12 photos (descriptors, sampling, codebook / GMM);
* ``test_transform``: ``transform`` of the 12 photos after a fit, with the descriptor memo
  disabled so descriptors are recomputed -- the per-image cost of the runner's test pass.
"""
from __future__ import annotations

import numpy as np
import pytest

import featbench.features as F

CLASSICAL = ["sift-bow", "sift-dense-bow", "sift-dense-bow-spm", "sift-vlad", "sift-dense-vlad",
             "sift-dense-fv", "surf-bow", "surf-dense-bow", "orb-bow"]
PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
          "camera", "brick", "grass", "gravel", "coins", "moon"]


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    from skimage import data

    def rgb(img: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.dstack([img] * 3) if img.ndim == 2 else img[..., :3])

    return [rgb(getattr(data, name)()) for name in PHOTOS]


def _create(spec: str) -> F.Extractor:
    ex = F.create(spec)
    ex.memo_bytes = 0
    return ex


@pytest.mark.parametrize("spec", CLASSICAL)
def test_describe(benchmark, spec, photos):
    stage = _create(spec).stage
    benchmark.extra_info["descriptors"] = sum(len(stage.compute(im).desc) for im in photos)
    benchmark.pedantic(lambda: [stage.compute(im) for im in photos], rounds=3, iterations=1)


@pytest.mark.parametrize("spec", CLASSICAL)
def test_fit(benchmark, spec, photos):
    benchmark.pedantic(lambda: _create(spec).fit(photos, seed=0), rounds=1, iterations=1)


@pytest.mark.parametrize("spec", CLASSICAL)
def test_transform(benchmark, spec, photos):
    ex = _create(spec).fit(photos, seed=0)
    out = benchmark.pedantic(ex.transform, args=(photos,), rounds=3, iterations=1)
    benchmark.extra_info["dim"] = int(out.shape[1])
