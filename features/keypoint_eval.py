"""Score keypoint detectors and descriptors under a known affine warp.

The protocol (shared by ``tests/test_surf.py`` and the benchmarks): warp an image with a
known 2x3 affine map ``M`` on the same canvas (:func:`affine_warp`), detect and describe on
both images, then

* :func:`repeatability`: the share of the original keypoints whose projection ``M @ (x, y, 1)``
  lies at least ``border`` pixels inside the warped canvas and has a keypoint detected in the
  warped image within ``radius`` pixels;
* :func:`match_precision`: among nearest-neighbour descriptor matches (original -> warped,
  Euclidean) that pass Lowe's ratio test, the share whose matched keypoint lies within
  ``radius`` pixels of the projection.

Keypoints are ``[N, 2+]`` arrays whose first two columns are x, y (featbench's keypoint
arrays), or sequences of ``cv2.KeyPoint``.
"""
from __future__ import annotations

import cv2
import numpy as np
from scipy.spatial import cKDTree


def as_points(kps) -> np.ndarray:
    """``[N, 2]`` float64 x, y from an ``[N, 2+]`` array or a sequence of ``cv2.KeyPoint``."""
    if len(kps) and isinstance(kps[0], cv2.KeyPoint):
        return np.array([kp.pt for kp in kps], dtype=np.float64)
    points = np.asarray(kps, dtype=np.float64)
    return points[:, :2] if points.ndim == 2 else points.reshape(0, 2)


def affine_warp(image: np.ndarray, angle: float = 0.0,
                scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Rotate by ``angle`` degrees (counter-clockwise on screen) and scale about the centre.

    Returns the warped image (same canvas, bilinear, black outside) and the 2x3 map ``M``
    taking original pixel coordinates to warped ones.
    """
    h, w = image.shape[:2]
    M = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, scale)
    return cv2.warpAffine(image, M, (w, h), flags=cv2.INTER_LINEAR), M


def project(points: np.ndarray, M: np.ndarray) -> np.ndarray:
    """Apply the 2x3 affine map ``M`` to ``[N, 2]`` points."""
    return points @ M[:, :2].T + M[:, 2]


def repeatability(kps_a, kps_b, M: np.ndarray, shape, radius: float = 3.0,
                  border: float = 20.0) -> float:
    """Share of ``kps_a`` (projected by ``M``, inside the ``shape`` canvas by ``border`` px)
    with a keypoint of ``kps_b`` within ``radius`` px; NaN when none project inside."""
    h, w = shape[:2]
    projected = project(as_points(kps_a), M)
    x, y = projected.T
    inside = (x >= border) & (x <= w - 1 - border) & (y >= border) & (y <= h - 1 - border)
    if not inside.any():
        return float("nan")
    points_b = as_points(kps_b)
    if len(points_b) == 0:
        return 0.0
    distance, _ = cKDTree(points_b).query(projected[inside])
    return float(np.mean(distance <= radius))


def _two_nearest(desc_a: np.ndarray, desc_b: np.ndarray, chunk: int = 2048):
    """Index of the nearest row of ``desc_b`` for each row of ``desc_a``, and the two
    smallest Euclidean distances."""
    b = desc_b.astype(np.float32)
    b_sq = np.einsum("ij,ij->i", b, b)
    nearest, d1, d2 = [], [], []
    for start in range(0, len(desc_a), chunk):
        a = desc_a[start:start + chunk].astype(np.float32)
        sq = np.einsum("ij,ij->i", a, a)[:, None] + b_sq[None, :] - 2 * a @ b.T
        two = np.argpartition(sq, 1, axis=1)[:, :2]
        two_sq = np.take_along_axis(sq, two, axis=1)
        order = np.argsort(two_sq, axis=1)
        two, two_sq = np.take_along_axis(two, order, 1), np.take_along_axis(two_sq, order, 1)
        nearest.append(two[:, 0])
        d1.append(two_sq[:, 0])
        d2.append(two_sq[:, 1])
    dist = [np.sqrt(np.maximum(np.concatenate(d), 0)) for d in (d1, d2)]
    return np.concatenate(nearest), dist[0], dist[1]


def match_precision(kps_a, desc_a: np.ndarray, kps_b, desc_b: np.ndarray, M: np.ndarray,
                    radius: float = 3.0, ratio: float = 0.8) -> float:
    """Share of ratio-test-passing nearest-neighbour matches ``a -> b`` that land within
    ``radius`` px of ``M``'s projection; NaN when no match passes (or ``b`` has < 2 rows;
    OpenCV returns None descriptors for no keypoints)."""
    if desc_a is None or desc_b is None or len(desc_a) == 0 or len(desc_b) < 2:
        return float("nan")
    nearest, d1, d2 = _two_nearest(np.asarray(desc_a), np.asarray(desc_b))
    passed = d1 < ratio * d2
    if not passed.any():
        return float("nan")
    projected = project(as_points(kps_a)[passed], M)
    error = np.linalg.norm(as_points(kps_b)[nearest[passed]] - projected, axis=1)
    return float(np.mean(error <= radius))
