"""Histogram of Oriented Gradients (Dalal & Triggs 2005) through OpenCV's HOGDescriptor.

Parameters (spec ``hog:size=128,cell=8,block=2,bins=9``):

* ``size``: the image is converted to gray and resized (area interpolation when shrinking,
  bilinear when enlarging) to ``size x size`` pixels, ignoring aspect ratio, so every image
  gives the same dimension. 128 keeps a 224-px object's shape while staying fast.
* ``cell``: cell side in pixels; ``block``: block side in cells; blocks move by one cell.
* ``bins``: unsigned orientation bins over 0-180 degrees.
* Block normalisation is L2-Hys (clip 0.2), OpenCV's and scikit-image's ``'L2-Hys'``.

Dimension: ``((size/cell - block + 1) ** 2) * block**2 * bins``; 8100 for the defaults.
``tests/test_hog.py`` checks these numbers against ``skimage.feature.hog`` with the same
parameters.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable

import cv2
import numpy as np

from featbench.datasets.images import to_gray
from featbench.errors import FeatbenchError

from .base import Extractor, register


@register("hog")
class HOG(Extractor):
    """HOG on a fixed-size grayscale image (OpenCV HOGDescriptor, L2-Hys blocks)."""

    name = "hog"
    version = "1"
    params = {"size": 128, "cell": 8, "block": 2, "bins": 9}

    def check(self) -> None:
        """Parameters that cannot make a HOG descriptor are one clear error, before any work."""
        for key in ("size", "cell", "block", "bins"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise FeatbenchError(f"hog: {key} must be a positive integer (got {value!r})")
        if self.size % self.cell or self.size < self.cell * self.block:
            raise FeatbenchError(f"hog: size={self.size} must be a multiple of cell={self.cell} and at least "
                                 f"cell x block = {self.cell * self.block}")

    def __getstate__(self) -> dict:
        """Parameters only: OpenCV's descriptor object cannot travel to another process (a Ray
        worker) and is rebuilt there on first use."""
        state = dict(self.__dict__)
        state.pop("_hog", None)
        return state

    def _descriptor(self) -> cv2.HOGDescriptor:
        self.check()
        cell = (self.cell, self.cell)
        block = (self.cell * self.block, self.cell * self.block)
        return cv2.HOGDescriptor((self.size, self.size), block, cell, cell, self.bins,
                                 1, -1.0, cv2.HOGDESCRIPTOR_L2HYS, 0.2, False)

    @property
    def dim(self) -> int:
        n = self.size // self.cell - self.block + 1
        return n * n * self.block * self.block * self.bins

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """Gray, resized to ``size x size`` (area interpolation when shrinking, bilinear when enlarging)."""
        gray = to_gray(image)
        interp = cv2.INTER_AREA if min(gray.shape) > self.size else cv2.INTER_LINEAR
        return cv2.resize(gray, (self.size, self.size), interpolation=interp)

    def compute(self, gray: np.ndarray) -> np.ndarray:
        """The descriptor of a prepared image."""
        if not hasattr(self, "_hog"):
            self._hog = self._descriptor()
        return self._hog.compute(gray).ravel().astype(np.float32)

    def cell_histograms(self, descriptor: np.ndarray) -> np.ndarray:
        """Per-cell orientation histograms ``[rows, cols, bins]`` from a descriptor: the mean of the
        block-normalised histograms of each cell over the blocks that contain it (what the
        classifier sees of that cell). OpenCV orders blocks and cells column-major
        (``[block_col, block_row, cell_col, cell_row, bin]``; see ``tests/test_hog.py``)."""
        n, b = self.size // self.cell - self.block + 1, self.block
        blocks = np.asarray(descriptor, np.float32).reshape(n, n, b, b, self.bins).transpose(1, 0, 3, 2, 4)
        cells = np.zeros((n + b - 1, n + b - 1, self.bins), np.float32)
        count = np.zeros((n + b - 1, n + b - 1, 1), np.float32)
        for r in range(b):
            for c in range(b):
                cells[r:r + n, c:c + n] += blocks[:, :, r, c]
                count[r:r + n, c:c + n] += 1
        return cells / count

    def visualise(self, image: np.ndarray) -> dict:
        """``hog-cells``: cell histograms on the ``size x size`` grid the image is squashed to; bin
        ``i`` holds unsigned gradient orientations around ``(i + 0.5) * 180 / bins`` degrees (image
        axes, y down), so the edge it stands for runs at that angle + 90."""
        return {"kind": "hog-cells", "cells": self.cell_histograms(self.transform_one(image)),
                "cell": np.int64(self.cell), "size": np.int64(self.size)}

    def transform_one(self, image: np.ndarray) -> np.ndarray:
        return self.compute(self.prepare(image))

    def speed_stages(self, device: str) -> "OrderedDict[str, Callable[[Any], Any]]":
        """``featbench speed``'s stages: preprocess (gray, resize), extract (the descriptor)."""
        return OrderedDict(preprocess=lambda images: [self.prepare(im) for im in images],
                           extract=lambda grays: np.stack([self.compute(g) for g in grays]))
