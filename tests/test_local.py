"""Local descriptors: dense grid, dense SIFT against OpenCV, RootSIFT, ORB bits, resize policy, memo."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from featbench.errors import FeatbenchError
from featbench.features import local as L


@pytest.fixture(scope="module")
def gray() -> np.ndarray:
    return L.prepare_gray(data.astronaut(), 160)


def test_resize_policy_shrinks_longer_side_never_enlarges():
    img = data.coffee()  # 400 x 600
    assert L.prepare_gray(img, 300).shape == (200, 300)
    assert L.prepare_gray(img, 1000).shape == (400, 600)
    assert L.prepare_gray(img, None).shape == (400, 600)
    assert L.prepare_gray(img, 300).dtype == np.uint8


def test_dense_grid_count_and_margins():
    centres = L.grid_centres((100, 80), step=8, margin=15)
    xs, ys = np.unique(centres[:, 0]), np.unique(centres[:, 1])
    assert len(centres) == len(xs) * len(ys)
    assert len(xs) == (80 - 1 - 30) // 8 + 1 and len(ys) == (100 - 1 - 30) // 8 + 1
    assert xs.min() >= 15 and xs.max() <= 80 - 1 - 15 and np.all(np.diff(xs) == 8)
    assert len(L.grid_centres((20, 20), step=4, margin=15)) == 0


def test_dense_sift_shapes_and_normalisation(gray):
    centres, sizes, desc = L.dense_sift(gray, step=6, sizes=(4, 8))
    n = len(L.grid_centres(gray.shape, 6, 12))
    assert desc.shape == (2 * n, 128) and len(centres) == len(sizes) == 2 * n
    assert np.array_equal(centres[:n], centres[n:])  # all scales share the grid (PHOW)
    norms = np.linalg.norm(desc, axis=1)
    assert np.all((np.abs(norms - 1) < 1e-5) | (norms == 0))
    assert desc.min() >= 0


def test_dense_sift_matches_opencv_sift_at_same_keypoints(gray):
    """Same geometry as cv2.SIFT.compute (bin width = 1.5 * keypoint size, same layout).

    They differ in the window (PHOW's flat window vs SIFT's Gaussian) and the smoothing, so
    they agree in direction, not exactly: median cosine >= 0.95 at bin size 8.
    """
    centres, _, desc = L.dense_sift(gray, step=10, sizes=(8,), contrast_threshold=0)
    kps = [cv2.KeyPoint(float(x), float(y), 8 / 1.5, 0) for x, y in centres]
    kps, ref = cv2.SIFT_create().compute(gray, kps)
    assert len(kps) == len(centres)
    cos = (desc * L.l2_normalize(ref)).sum(axis=1)
    assert np.median(cos) >= 0.95


def test_flat_windows_give_zero_descriptors():
    flat = np.full((64, 64), 120, np.uint8)
    _, _, desc = L.dense_sift(flat, step=8, sizes=(4,))
    assert len(desc) and not desc.any()


def drawing_on_paper(margin: int = 0) -> np.ndarray:
    """A line drawing (dark strokes on white, slight paper noise), with ``margin`` px more paper around it."""
    rng = np.random.default_rng(3)
    img = np.full((96, 96), 250, np.uint8)
    cv2.circle(img, (48, 48), 30, 20, 2)
    cv2.line(img, (20, 80), (76, 16), 20, 2)
    img = np.pad(img, margin, constant_values=250)
    return np.clip(img + rng.integers(-1, 2, img.shape), 0, 255).astype(np.uint8)


def test_flat_windows_zero_drop_or_keep():
    """``flat``: PHOW's zero vectors, left out, or normalised as they are (OpenCV's grid SIFT)."""
    img = drawing_on_paper(margin=32)
    zero, drop, keep = (L.LocalStage("sift-dense", step=8, sizes=(4,), root=True, flat=f).compute(img)
                        for f in ("zero", "drop", "keep"))
    blank = ~zero.desc.any(axis=1)
    assert 0.3 < blank.mean() < 0.95  # paper is flat
    assert np.array_equal(drop.desc, zero.desc[~blank]) and np.array_equal(drop.xy, zero.xy[~blank])
    assert len(keep.desc) == len(zero.desc) and keep.desc.any(axis=1).all()  # paper noise, normalised
    with pytest.raises(FeatbenchError, match="flat="):
        L.LocalStage("sift-dense", flat="skip")


def test_flat_option_keeps_the_keys_of_cached_features():
    """``flat=zero`` is what every cached and published dense-SIFT feature used: adding the option
    must not change their stage key or extractor cache key (values from before the option existed)."""
    from featbench.features import create

    assert L.LocalStage("sift-dense", root=True).key == "6d74e4c469bb37af"
    assert create("sift-dense-bow-spm").config.key == "00c69e957cbddbe1"
    assert create("sift-dense-bow-spm:flat=zero").config.key == "00c69e957cbddbe1"
    assert create("sift-dense-fv").config.key == "73f9e1dc9eadab63"
    assert create("sift-dense-bow-spm:flat=drop").config.key != "00c69e957cbddbe1"
    assert create("sift-dense-bow-spm:flat=drop").stage.key != L.LocalStage("sift-dense", root=True).key


def test_rootsift_properties():
    rng = np.random.default_rng(0)
    a, b = rng.random((2, 5, 128), dtype=np.float32)
    ra, rb = L.root_descriptors(a), L.root_descriptors(b)
    assert np.allclose(np.linalg.norm(ra, axis=1), 1, atol=1e-5) and ra.min() >= 0
    assert np.allclose(ra ** 2, a / a.sum(1, keepdims=True), atol=1e-6)
    # Euclidean distance between RootSIFT = Hellinger kernel on the L1-normalised originals.
    pa, pb = a / a.sum(1, keepdims=True), b / b.sum(1, keepdims=True)
    assert np.allclose(((ra - rb) ** 2).sum(1), 2 - 2 * np.sqrt(pa * pb).sum(1), atol=1e-5)
    assert not L.root_descriptors(np.zeros((1, 128), np.float32)).any()
    signed = rng.normal(size=(3, 64)).astype(np.float32)  # SURF has signed sums
    root = L.root_descriptors(signed)
    assert np.allclose(np.linalg.norm(root, axis=1), 1, atol=1e-5)
    assert np.array_equal(np.sign(root), np.sign(signed))


def test_stage_outputs_positions_and_float16(gray):
    stage = L.LocalStage("sift-dense", max_side=120, step=8, sizes=(4, 6), root=True)
    feats = stage.compute(data.astronaut())
    assert feats.desc.dtype == np.float16 and feats.desc.shape[1] == stage.dim == 128
    assert feats.xy.shape == (len(feats.desc), 2) and feats.xy.min() >= 0 and feats.xy.max() < 1
    norms = np.linalg.norm(feats.desc.astype(np.float32), axis=1)
    assert np.all((np.abs(norms - 1) < 2e-3) | (norms == 0))  # RootSIFT, float16 rounding


def test_sparse_sift_unit_norm():
    feats = L.LocalStage("sift", max_side=200).compute(data.astronaut())
    assert len(feats.desc) > 50
    assert np.allclose(np.linalg.norm(feats.desc.astype(np.float32), axis=1), 1, atol=2e-3)


def test_orb_bits_euclidean_is_hamming():
    gray = L.prepare_gray(data.astronaut(), 256)
    kps, desc = cv2.ORB_create(nfeatures=50).detectAndCompute(gray, None)
    _, bits = L.orb_bits(gray, 50)
    assert bits.shape == (len(desc), 256) and set(np.unique(bits)) <= {0.0, 1.0}
    hamming = cv2.norm(desc[0], desc[1], cv2.NORM_HAMMING)
    assert ((bits[0] - bits[1]) ** 2).sum() == hamming


def test_stage_key_tracks_relevant_parameters_only():
    base = L.LocalStage("sift-dense")
    assert base.key == L.LocalStage("sift-dense", hessian=100.0).key  # unused by SIFT
    assert base.key != L.LocalStage("sift-dense", step=8).key
    assert base.key != L.LocalStage("sift-dense", root=True).key
    assert base.key != L.LocalStage("sift").key
    with pytest.raises(FeatbenchError):
        L.LocalStage("orb", root=True)
    with pytest.raises(FeatbenchError):
        L.LocalStage("brisk")


def test_memo_is_bounded_and_releases_on_take():
    feats = L.LocalFeatures(np.zeros((10, 2), np.float32), np.zeros((10, 128), np.float16))
    memo = L.DescriptorMemo(max_bytes=2 * feats.nbytes)
    assert memo.put("a", feats) and memo.put("b", feats) and not memo.put("c", feats)
    assert memo.take("a") is feats and memo.take("a") is None
    assert memo.nbytes == feats.nbytes and len(memo) == 1


def test_image_key_uses_uid_else_pixels():
    class Record:
        uid = "abc"

    img = data.astronaut()[:32, :32]
    assert L.image_key(Record()) == "abc"
    assert L.image_key(img) == L.image_key(img.copy()) != L.image_key(img[::-1].copy())


def test_surf_stages():
    img = data.astronaut()
    sparse = L.LocalStage("surf", max_side=160).compute(img)
    dense = L.LocalStage("surf-dense", max_side=96, step=12, sizes=(6, 12), extended=True, root=True).compute(img)
    assert sparse.desc.shape[1] == 64 and len(sparse.desc) > 20
    assert dense.desc.shape[1] == 128 and len(dense.desc) > 20
    assert np.allclose(np.linalg.norm(dense.desc.astype(np.float32), axis=1), 1, atol=2e-3)
