"""pytest-benchmark checks of the ``cnn`` extractor's CPU pipeline against issue 3's targets.

Skipped in the default test run (``addopts`` has ``--benchmark-skip``). Run::

    pytest tests/benchmarks/test_bench_cnn.py --benchmark-only

Both use ``tf_efficientnet_lite0`` (package weights) at batch 32 on Office-Caltech-10 JPEGs
(every k-th image of the four domains; ``$FEATBENCH_BENCH_IMAGES``, default 128) and need
``../shared/datasets``:

* ``test_end_to_end_keeps_up_with_the_forward_pass``: images/s of ``transform_outputs`` on the
  records (read + decode + resize, in DataLoader workers or inline by ``features/cnn_runtime.py``'s
  rule; forward, pooling) must be at least
  0.85 x the forward pass alone on ready tensors, both timed in one run by ``featbench speed``'s
  own timer (:func:`featbench.speed.measure_e2e` and :func:`featbench.speed.measure_synthetic`).
* ``test_three_layers_cost_one_pass``: ``blocks.3+blocks.5+pre_logits`` must cost at most
  1.15 x ``pre_logits`` alone (forward + pooling on the same ready batch, the extractors'
  ``speed_synthetic`` hook, alternated so background load hits both alike; best of the repeats).

The measured figures go to ``extra_info`` (``--benchmark-json`` keeps them).
"""
from __future__ import annotations

import os
import time

import pytest

from featbench.datasets.folder import read_dataset
from featbench.features import create
from featbench.speed import measure_e2e, measure_synthetic

BATCH = 32
N_IMAGES = int(os.environ.get("FEATBENCH_BENCH_IMAGES", "128"))
REPEATS = 5


@pytest.fixture(scope="module")
def office_records(shared_datasets):
    ds = read_dataset(shared_datasets / "office_caltech10")
    return ds.records[:: max(1, len(ds.records) // N_IMAGES)][:N_IMAGES]


def test_end_to_end_keeps_up_with_the_forward_pass(benchmark, office_records):
    ex = create("cnn:tf_efficientnet_lite0")
    ex.configure_runtime("cpu", batch_size=BATCH)

    def measure():
        e2e = measure_e2e(ex, office_records, "cpu", BATCH, REPEATS, warmup=1)
        synthetic = measure_synthetic(ex, office_records, "cpu", BATCH, REPEATS, warmup=1)
        return {"e2e_img_per_s": e2e["img_per_s"], "synthetic_img_per_s": synthetic["img_per_s"],
                "ratio": e2e["img_per_s"] / synthetic["img_per_s"], "n_images": len(office_records)}

    result = benchmark.pedantic(measure, rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    assert result["ratio"] >= 0.85, result


def test_three_layers_cost_one_pass(benchmark, office_records):
    one = create("cnn:tf_efficientnet_lite0@pre_logits")
    three = create("cnn:tf_efficientnet_lite0@blocks.3+blocks.5+pre_logits")
    images = [r.load() for r in office_records[:BATCH]]
    steps = {"one": one.speed_synthetic("cpu", len(images), images),
             "three": three.speed_synthetic("cpu", len(images), images)}
    for step in steps.values():  # warm up both
        step()
    seconds = {"one": [], "three": []}
    for _ in range(REPEATS):
        for key, step in steps.items():
            start = time.perf_counter()
            step()
            seconds[key].append(time.perf_counter() - start)
    benchmark.pedantic(steps["three"], rounds=1, iterations=1)
    ratio = min(seconds["three"]) / min(seconds["one"])
    benchmark.extra_info.update(n_images=len(images), batch_size=len(images), ratio=ratio,
                                one_layer_img_per_s=len(images) / min(seconds["one"]),
                                three_layers_img_per_s=len(images) / min(seconds["three"]))
    assert ratio <= 1.15, seconds
