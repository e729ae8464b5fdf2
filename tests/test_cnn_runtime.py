"""The CNN extractor's default decode workers and torch threads (``features/cnn_runtime.py``)."""
from __future__ import annotations

import os

import pytest

from featbench.features import create
from featbench.features.cnn_runtime import available_cores, runtime_layout


@pytest.mark.parametrize("cores, layout", [
    (1, (0, 1)), (2, (0, 2)), (3, (0, 3)),  # below 4 cores every core runs the forward; decode inline
    (4, (1, 3)), (8, (1, 7)), (9, (2, 7)), (16, (2, 14)), (64, (8, 56)),  # one worker per 8 cores
])
def test_cpu_rule(monkeypatch, cores, layout):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert runtime_layout("cpu", cores=cores) == layout


def test_fewer_threads_leave_cores_to_decode_workers(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert runtime_layout("cpu", threads=1, cores=2) == (1, 1)  # the free core decodes
    assert runtime_layout("cpu", threads=4, cores=16) == (2, 4)  # at most one worker per 8 cores
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert runtime_layout("cpu", cores=2) == (1, 1)
    monkeypatch.setenv("OMP_NUM_THREADS", "not a number")
    assert runtime_layout("cpu", cores=2) == (0, 2)


def test_given_values_and_cuda():
    assert runtime_layout("cpu", num_workers=3, threads=2, cores=2) == (3, 2)
    assert runtime_layout("cuda", cores=4) == (4, None)  # the GPU runs the forward: threads untouched
    assert runtime_layout("cuda:1", cores=32) == (8, None)
    assert runtime_layout("cuda", num_workers=2, threads=3, cores=32) == (2, 3)


def test_extractor_uses_the_cores_it_may_run_on():
    assert available_cores() == len(os.sched_getaffinity(0))
    ex = create("cnn:squeezenet1_0:weights=random")
    ex.configure_runtime("cpu")
    runtime = ex.describe()["runtime"]
    assert (runtime["num_workers"], runtime["threads"]) == runtime_layout("cpu")
    ex.configure_runtime("cpu", num_workers=2, threads=1)
    assert (ex.num_workers, ex.threads) == (2, 1)
