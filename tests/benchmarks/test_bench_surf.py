"""featbench's SURF against OpenCV's SIFT on the same 640x480 photo (group "surf-vs-sift").

Run with ``pytest tests/benchmarks/test_bench_surf.py --benchmark-only``. Both detect about
1,130 keypoints on this photo. Each test warms up first, so numba's compile (or cache load)
is not timed, and records the rotate-30 repeatability and precision of what it timed in
``extra_info`` (see :mod:`featbench.features.keypoint_eval`).
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data

from featbench.features.keypoint_eval import affine_warp, match_precision, repeatability
from featbench.features.surf import detect_and_compute


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    gray = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2GRAY)
    return cv2.resize(gray, (640, 480))


def _record_quality(benchmark, extract, photo) -> None:
    warped, M = affine_warp(photo, 30)
    kps_a, desc_a = extract(photo)
    kps_b, desc_b = extract(warped)
    benchmark.extra_info["keypoints"] = len(kps_a)
    benchmark.extra_info["repeatability_rotate30"] = repeatability(kps_a, kps_b, M, warped.shape)
    benchmark.extra_info["precision_rotate30"] = match_precision(kps_a, desc_a, kps_b, desc_b, M)


@pytest.mark.benchmark(group="surf-vs-sift", min_rounds=20)
def test_featbench_surf(benchmark, photo):
    _record_quality(benchmark, detect_and_compute, photo)
    kps, desc = benchmark(detect_and_compute, photo, 400.0)
    assert len(kps) == len(desc) > 0


@pytest.mark.benchmark(group="surf-vs-sift", min_rounds=20)
def test_opencv_sift(benchmark, photo):
    sift = cv2.SIFT_create()
    _record_quality(benchmark, lambda image: sift.detectAndCompute(image, None), photo)
    kps, desc = benchmark(sift.detectAndCompute, photo, None)
    assert len(kps) == len(desc) > 0
