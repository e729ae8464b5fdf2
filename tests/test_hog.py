"""Cross-check featbench's HOG (OpenCV HOGDescriptor) against ``skimage.feature.hog``.

Both get the same grey 128x128 pixels and the same parameters (8 px cells, 2x2-cell blocks
moved by one cell, 9 unsigned bins, L2-Hys with clipping at 0.2). They agree on the
dimension and, once OpenCV's layout (blocks and the cells inside a block in column-major
order) is mapped onto scikit-image's ``[block_row, block_col, cell_row, cell_col, bin]``,
on every element when the binning cannot differ. On real photos they are close but not
equal by design:

* OpenCV interpolates each gradient linearly between the two nearest orientation bins and
  bilinearly between the four cells of a block, and weights a block by a Gaussian window
  (sigma = block side / 4 = 4 px); scikit-image adds each gradient to one bin of one cell.

Tolerances, from measurements on scikit-image's photos (astronaut 0.93 / 0.87 / 0.83,
camera similar): the median cosine between corresponding blocks >= 0.9, its 10th
percentile >= 0.8, the correlation over the whole vector >= 0.78. On a vertical ramp (every
gradient at the centre of bin 4, so interpolation changes nothing) interior blocks agree to
2e-3 (OpenCV's Gaussian window and float32 arithmetic).
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data, feature

import featbench.features as F
from featbench.datasets.images import to_gray

SIZE, CELL, BLOCK, BINS = 128, 8, 2, 9
N_BLOCKS = SIZE // CELL - BLOCK + 1


def _featbench_hog(gray: np.ndarray) -> np.ndarray:
    """featbench's HOG in scikit-image's layout ``[block_row, block_col, cell_row, cell_col, bin]``."""
    ex = F.create(f"hog:size={SIZE},cell={CELL},block={BLOCK},bins={BINS}")
    vec = ex.transform([np.dstack([gray] * 3)])[0]
    assert vec.shape == (N_BLOCKS * N_BLOCKS * BLOCK * BLOCK * BINS,) == (ex.dim,)
    # OpenCV: block column, block row, cell column, cell row, bin.
    return vec.reshape(N_BLOCKS, N_BLOCKS, BLOCK, BLOCK, BINS).transpose(1, 0, 3, 2, 4)


def _skimage_hog(gray: np.ndarray) -> np.ndarray:
    return feature.hog(gray.astype(np.float64), orientations=BINS, pixels_per_cell=(CELL, CELL),
                       cells_per_block=(BLOCK, BLOCK), block_norm="L2-Hys", feature_vector=False)


def _photo(name: str) -> np.ndarray:
    img = getattr(data, name)()
    return cv2.resize(to_gray(img), (SIZE, SIZE), interpolation=cv2.INTER_AREA)


def test_layout_and_values_match_exactly_when_binning_cannot_differ():
    rows = np.arange(SIZE, dtype=np.float64)[:, None].repeat(SIZE, axis=1)
    ramp = (40 + 1.5 * rows).astype(np.uint8)  # every gradient points down the rows: bin 4's centre
    ours, ref = _featbench_hog(ramp), _skimage_hog(ramp)
    assert ours.shape == ref.shape
    interior = (slice(1, -1), slice(1, -1))
    assert np.abs(ours[interior] - ref[interior]).max() < 2e-3
    assert np.allclose(ref[interior][..., 4], 0.5)


@pytest.mark.parametrize("name", ["astronaut", "camera"])
def test_close_to_skimage_on_photos(name):
    gray = _photo(name)
    ours, ref = _featbench_hog(gray), _skimage_hog(gray)
    a = ours.reshape(N_BLOCKS * N_BLOCKS, -1)
    b = ref.reshape(N_BLOCKS * N_BLOCKS, -1)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    assert np.median(cos) >= 0.9
    assert np.percentile(cos, 10) >= 0.8
    assert np.corrcoef(ours.ravel(), ref.ravel())[0, 1] >= 0.78
