"""pytest-benchmark checks of the ``cnn`` extractor's CPU pipeline against issue 3's targets.

Skipped in the default test run (``addopts`` has ``--benchmark-skip``). Run::

    pytest tests/benchmarks/test_bench_cnn.py --benchmark-only

Both use ``tf_efficientnet_lite0`` (package weights) at batch 32 on Office-Caltech-10 JPEGs
(every k-th image of the four domains; ``$FEATBENCH_BENCH_IMAGES``, default 128) and need
``../shared/datasets``:

* ``test_end_to_end_keeps_up_with_the_forward_pass``: images/s of ``transform_outputs`` on the
  records (read + decode + resize in DataLoader workers, forward, pooling) must be at least
  0.85 x the forward pass alone on ready tensors, both from :func:`measure_throughput` in one run.
* ``test_three_layers_cost_one_pass``: ``blocks.3+blocks.5+pre_logits`` must cost at most
  1.15 x ``pre_logits`` alone (normalise + forward + pooling on the same decoded batches,
  alternated so background load hits both alike; best of the repeats).

The measured figures go to ``extra_info`` (``--benchmark-json`` keeps them).
"""
from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch

from featbench.datasets.folder import read_dataset
from featbench.features import create
from featbench.features.cnn import measure_throughput, prepare_views

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
    result = benchmark.pedantic(measure_throughput, args=(ex, office_records, BATCH, REPEATS), rounds=1, iterations=1)
    benchmark.extra_info.update({k: v for k, v in result.items() if k not in ("e2e_s", "raw_s")})
    assert result["ratio"] >= 0.85, result


def test_three_layers_cost_one_pass(benchmark, office_records):
    one = create("cnn:tf_efficientnet_lite0@pre_logits")
    three = create("cnn:tf_efficientnet_lite0@blocks.3+blocks.5+pre_logits")
    prep = one.preprocess
    batches = [torch.from_numpy(np.stack([prepare_views(r, prep, None) for r in office_records[i:i + BATCH]]))
               for i in range(0, len(office_records), BATCH)]

    def run(ex):
        with torch.inference_mode():
            for b in batches:
                ex._features(b)

    run(one)  # build and warm up both
    run(three)
    seconds = {"one": [], "three": []}
    for _ in range(REPEATS):
        for key, ex in (("one", one), ("three", three)):
            start = time.perf_counter()
            run(ex)
            seconds[key].append(time.perf_counter() - start)
    benchmark.pedantic(run, args=(three,), rounds=1, iterations=1)
    ratio = min(seconds["three"]) / min(seconds["one"])
    benchmark.extra_info.update(n_images=len(office_records), batch_size=BATCH, ratio=ratio,
                                one_layer_img_per_s=len(office_records) / min(seconds["one"]),
                                three_layers_img_per_s=len(office_records) / min(seconds["three"]))
    assert ratio <= 1.15, seconds
