"""Encodings (BoW, spatial pyramid, kernel maps, VLAD, Fisher vectors) and the registered extractors."""
from __future__ import annotations

import numpy as np
import pytest
from skimage import data
from sklearn.kernel_approximation import AdditiveChi2Sampler

import featbench.features as F
from featbench.errors import FeatbenchError
from featbench.features import encodings as E
from featbench.features import local as L

CLASSICAL = ["sift-bow", "sift-dense-bow", "sift-dense-bow-spm", "sift-vlad", "sift-dense-vlad",
             "sift-dense-fv", "surf-bow", "surf-dense-bow", "orb-bow"]
#: Small and fast: 96 px images, coarse grid, tiny codebooks.
TINY = {"sift-dense": "max_side=96,step=8", "sift": "max_side=160", "surf": "max_side=160",
        "surf-dense": "max_side=96,step=8", "orb": "max_side=160,n_features=200"}


def _random_descriptors(n: int = 600, d: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 2), dtype=np.float32) * 0.999, rng.random((n, d), dtype=np.float32)


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    gray = [np.dstack([getattr(data, n)()] * 3) for n in ("camera", "brick", "grass")]
    return [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()] + gray


def _tiny(name: str, extra: str = "") -> F.Extractor:
    method = F.create(name).local_method
    k = "k=4" if "fv" in name or "vlad" in name else "k=16"
    return F.create(f"{name}:{TINY[method]},{k},max_desc=300" + (f",{extra}" if extra else ""))


# --------------------------------------------------------------------------- bag of words

@pytest.mark.parametrize("levels", [1, 3])
def test_bow_l1_sums_to_one_and_hellinger_has_unit_norm(levels):
    xy, desc = _random_descriptors()
    l1 = E.BowEncoder(8, levels=levels, norm="l1").fit(desc, seed=0)
    h = E.BowEncoder(8, levels=levels, norm="hellinger").fit(desc, seed=0)
    assert l1.encode(xy, desc).sum() == pytest.approx(1, abs=1e-5)
    assert np.linalg.norm(h.encode(xy, desc)) == pytest.approx(1, abs=1e-5)
    assert not l1.encode(np.zeros((0, 2)), np.zeros((0, 16))).any()  # no descriptor: zeros, no NaN


def test_spatial_pyramid_dimension_and_lazebnik_weights():
    assert np.allclose(E.pyramid_weights(3), [1 / 4, 1 / 4, 1 / 2])
    assert np.allclose(E.pyramid_weights(2), [1 / 2, 1 / 2])
    assert E.pyramid_weights(4).sum() == pytest.approx(1)
    xy, desc = _random_descriptors()
    enc = E.BowEncoder(8, levels=3, norm="l1").fit(desc, seed=0)
    hist = enc.encode(xy, desc)
    assert hist.shape == (enc.dim,) == (8 * 21,)
    level0, level1, level2 = hist[:8], hist[8:40].reshape(4, 8), hist[40:].reshape(16, 8)
    assert [level0.sum(), level1.sum(), level2.sum()] == pytest.approx([1 / 4, 1 / 4, 1 / 2], abs=1e-6)
    # Each level counts the same words: rescaled by its weight, they add up to level 0.
    assert np.allclose(level1.sum(0) * 4 / 4, level0 * 1, atol=1e-6)
    assert np.allclose(level2.sum(0) / 2, level0 * 1, atol=1e-6)
    # Top-left 2x2 cell = the sum of the four top-left 4x4 cells (row-major grids).
    top_left = level2.reshape(4, 4, 8)[:2, :2].sum(axis=(0, 1))
    assert np.allclose(level1[0] / (1 / 4), top_left / (1 / 2), atol=1e-6)


def test_finest_cells_are_row_major():
    xy = np.array([[0.1, 0.1], [0.9, 0.1], [0.1, 0.9], [0.999, 0.999]])
    assert E.finest_cells(xy, 2).tolist() == [0, 1, 2, 3]
    assert E.finest_cells(xy, 1).tolist() == [0, 0, 0, 0]


# --------------------------------------------------------------------------- kernel maps

def test_chi2_map_equals_sklearn_sampler_and_shapes():
    rng = np.random.default_rng(0)
    x = rng.random((5, 30))
    x[x < 0.3] = 0
    ours = E.homogeneous_kernel_map(x, "chi2")
    ref = AdditiveChi2Sampler(sample_steps=2, sample_interval=E.kernel_map_interval("chi2")).fit_transform(x)
    assert ours.shape == (5, 90) and np.allclose(ours, ref, atol=1e-6)
    assert not ours[:, :30][x == 0].any()


def _exact_kernels(h: np.ndarray) -> dict[str, np.ndarray]:
    a, b = h[:, None], h[None]
    chi2 = np.where(a + b > 0, 2 * a * b / np.maximum(a + b, 1e-300), 0).sum(-1)
    return {"chi2": chi2, "intersection": np.minimum(a, b).sum(-1)}


def test_kernel_maps_approximate_their_kernels():
    """Order-1 maps on L1 histograms (kernel values up to 1).

    chi2: every value within 0.05. Intersection, whose spectrum decays slowly, is coarser:
    between different histograms within 0.08 (correlation >= 0.95), while k(x, x) comes
    out as 0.79 instead of 1 -- a constant factor on the diagonal that is harmless for a
    linear classifier on standardised features.
    """
    rng = np.random.default_rng(1)
    h = rng.random((20, 50)) ** 3
    h /= h.sum(1, keepdims=True)
    exact = _exact_kernels(h)
    approx = {k: (lambda p: p @ p.T)(E.homogeneous_kernel_map(h, k).astype(np.float64)) for k in exact}
    assert np.abs(approx["chi2"] - exact["chi2"]).max() < 0.05
    off = ~np.eye(len(h), dtype=bool)
    assert np.abs(approx["intersection"] - exact["intersection"])[off].max() < 0.08
    assert np.corrcoef(approx["intersection"][off], exact["intersection"][off])[0, 1] >= 0.95
    assert np.allclose(np.diag(approx["intersection"]), 0.79, atol=0.01)


def test_kernel_map_rejects_negative_values_and_needs_l1():
    with pytest.raises(FeatbenchError):
        E.homogeneous_kernel_map(np.array([[-0.1, 0.2]]), "chi2")
    with pytest.raises(FeatbenchError):
        E.BowEncoder(8, norm="hellinger", kmap="chi2")
    assert E.BowEncoder(8, levels=3, norm="l1", kmap="intersection").dim == 8 * 21 * 3


# --------------------------------------------------------------------------- VLAD and Fisher

@pytest.mark.parametrize("pca", [None, 8])
def test_vlad_dimension_and_normalisation(pca):
    xy, desc = _random_descriptors()
    enc = E.VladEncoder(6, pca=pca).fit(desc, seed=0)
    code = enc.encode(xy[:200], desc[:200])
    d = pca or desc.shape[1]
    assert code.shape == (enc.dim,) == (6 * d,)
    assert np.linalg.norm(code) == pytest.approx(1, abs=1e-5)
    # Undo the signed square root: every word's residual block has the same norm (intra-norm).
    blocks = (np.sign(code) * code ** 2).reshape(6, d)
    norms = np.linalg.norm(blocks, axis=1)
    assert np.allclose(norms[norms > 0], norms.max(), rtol=1e-4)


def test_vlad_and_fisher_pyramids_concatenate_unit_regions():
    xy, desc = _random_descriptors()
    vlad = E.VladEncoder(4, levels=2).fit(desc, seed=0)
    fisher = E.FisherEncoder(4, pca=8, levels=2).fit(desc, seed=0)
    for enc, per_region in ((vlad, 4 * 16), (fisher, 2 * 4 * 8)):
        code = enc.encode(xy, desc)
        assert code.shape == (5 * per_region,) == (enc.dim,)
        assert np.linalg.norm(code) == pytest.approx(1, abs=1e-5)
        regions = np.linalg.norm(code.reshape(5, per_region), axis=1)
        assert np.allclose(regions, 1 / np.sqrt(5), atol=1e-5)


def test_fisher_vector_matches_its_definition():
    """Perronnin et al. 2010: u_k, v_k from the posteriors, then signed sqrt and L2; 2*K*D long."""
    xy, desc = _random_descriptors(d=12)
    enc = E.FisherEncoder(5).fit(desc, seed=0)
    x = desc[:300].astype(np.float64)
    code = enc.encode(xy[:300], x)
    assert code.shape == (2 * 5 * 12,) == (enc.dim,)
    g = enc.gmm
    q = g.posteriors(x.astype(np.float32)).astype(np.float64)
    z = (x[:, None, :] - g.means) / np.sqrt(g.variances)  # [N, K, D]
    n, w = len(x), g.weights[:, None].astype(np.float64)
    u = (q[..., None] * z).sum(0) / (n * np.sqrt(w))
    v = (q[..., None] * (z ** 2 - 1)).sum(0) / (n * np.sqrt(2 * w))
    ref = np.concatenate([u.ravel(), v.ravel()])
    ref = np.sign(ref) * np.sqrt(np.abs(ref))
    assert np.allclose(code, ref / np.linalg.norm(ref), atol=1e-4)


def test_diagonal_gmm_recovers_separated_components():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (3000, 3)), rng.normal(10, 0.5, (1000, 3))]).astype(np.float32)
    gmm = E.DiagonalGMM(2).fit(x, seed=0)
    order = np.argsort(gmm.means[:, 0])
    assert np.allclose(gmm.weights[order], [0.75, 0.25], atol=0.01)
    assert np.allclose(gmm.means[order], [[0] * 3, [10] * 3], atol=0.1)
    assert np.allclose(gmm.variances[order], [[1] * 3, [0.25] * 3], rtol=0.1)
    assert np.allclose(gmm.posteriors(x[:10]).sum(1), 1, atol=1e-5)


def test_pca_is_orthonormal_and_ordered():
    _, desc = _random_descriptors(d=10)
    desc[:, 0] *= 5
    pca = E.PCA(4).fit(desc)
    assert np.allclose(pca.components @ pca.components.T, np.eye(4), atol=1e-5)
    var = pca.transform(desc).var(0)
    assert np.all(np.diff(var) <= 1e-6) and abs(pca.components[0, 0]) > 0.99
    with pytest.raises(FeatbenchError):
        E.PCA(11).fit(desc)


def test_kmeans_and_sampling_are_seeded():
    _, desc = _random_descriptors()
    assert np.array_equal(E.kmeans(desc, 8, seed=3), E.kmeans(desc, 8, seed=3))
    assert not np.array_equal(E.kmeans(desc, 8, seed=3), E.kmeans(desc, 8, seed=4))
    a = E.sample_rows(desc, 50, E.stable_rng(0, "img"))
    E.sample_rows(desc, 50, E.stable_rng(0, "other"))
    assert np.array_equal(a, E.sample_rows(desc, 50, E.stable_rng(0, "img")))
    with pytest.raises(FeatbenchError):
        E.kmeans(desc[:5], 8, seed=0)


# --------------------------------------------------------------------------- registered extractors

def test_all_classical_extractors_are_registered():
    assert set(CLASSICAL) <= set(F.available())


def test_spec_options_parse_and_round_trip():
    spec = ("sift-dense-bow:k=100,root=false,norm=l1,kmap=intersection,levels=2,step=6,"
            "sizes=4+8,max_side=200,max_desc=50")
    ex = F.create(spec)
    assert (ex.k, ex.root, ex.norm, ex.kmap, ex.levels, ex.step, ex.sizes, ex.max_side, ex.max_desc) == \
        (100, False, "l1", "intersection", 2, 6, [4, 8], 200, 50)
    assert ex.stage.sizes == (4, 8) and ex.stage.step == 6
    assert F.create(ex.spec).config == ex.config
    assert F.create("sift-dense-fv:pca=none,k=64").pca is None
    assert F.create("sift-dense-bow-spm").levels == 3
    for bad in ("sift-dense-bow:norm=l3", "sift-dense-bow:kmap=chi2",  # chi2 needs norm=l1
                "sift-dense-bow:levels=7", "sift-bow:step=4", "orb-bow:root=true", "sift-dense-bow:bogus=1",
                "sift-dense-fv:pca=0", "sift-dense-vlad:k=many", "sift-dense-bow:max_desc=0",
                "sift-dense-bow:sizes=4.5", "sift-dense-bow:max_side=8"):
        with pytest.raises(FeatbenchError):
            F.create(bad).check()  # the constructor only stores; check() (the runner's, before work) validates
    assert "stage" not in vars(F.create("sift-dense-bow"))  # the constructor builds no stage (estimator rule)


def test_transform_needs_fit(photos):
    ex = _tiny("sift-dense-bow")
    with pytest.raises(FeatbenchError):
        ex.transform(photos[:1])
    with pytest.raises(FeatbenchError):
        ex.cache_key()


def test_same_seed_same_features_other_seed_other_codebook(photos):
    a = _tiny("sift-dense-bow").fit(photos[:5], seed=0).transform(photos[5:])
    b = _tiny("sift-dense-bow").fit(photos[:5], seed=0).transform(photos[5:])
    c = _tiny("sift-dense-bow").fit(photos[:5], seed=1).transform(photos[5:])
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_fit_uses_only_training_images_in_any_order(photos, monkeypatch):
    seen = []
    compute = L.LocalStage.compute

    def spy(stage, image):
        seen.append(L.image_key(image))
        return compute(stage, image)

    monkeypatch.setattr(L.LocalStage, "compute", spy)
    train, test = photos[:4], photos[4:]
    ex = _tiny("sift-dense-fv").fit(train, seed=0)
    assert sorted(seen) == sorted(L.image_key(im) for im in train)
    reordered = _tiny("sift-dense-fv").fit(train[::-1], seed=0)
    assert np.array_equal(ex.transform(test), reordered.transform(test))
    assert ex.fit_key == reordered.fit_key != _tiny("sift-dense-fv").fit(photos[1:5], seed=0).fit_key


def test_memo_bridges_fit_and_transform_without_changing_features(photos):
    ex = _tiny("sift-dense-vlad").fit(photos[:4], seed=0)
    assert len(ex._memo) == 4
    via_memo = ex.transform(photos[:4])
    assert len(ex._memo) == 0
    assert np.array_equal(via_memo, ex.transform(photos[:4]))  # recomputed this time
    bounded = _tiny("sift-dense-vlad")
    bounded.memo_bytes = 0
    assert len(bounded.fit(photos[:4], seed=0)._memo) == 0


def test_nearest_words_do_not_depend_on_the_chunk_size():
    _, x = _random_descriptors(n=2500, d=32)
    centroids = x[::25].copy()
    words = E.nearest(x, centroids)
    assert words.shape == (2500,) and (words[::25] == np.arange(100)).all()
    for chunk in (1, 7, 1024, 8192):
        assert np.array_equal(E.nearest(x, centroids, chunk=chunk), words)


def test_one_thread_describes_in_the_callers_thread(photos, monkeypatch):
    """A Ray worker given one CPU gets threads=1: it must keep one core busy, not start a
    describing thread beside its encoding one; the features stay the same."""
    import featbench.features.classical as C

    ex = _tiny("sift-dense-bow").fit(photos[:4], seed=0)
    pooled = ex.transform(photos)
    ex.configure_runtime(threads=1)

    def no_pool(*a, **k):
        raise AssertionError("threads=1 started a thread pool")

    monkeypatch.setattr(C, "ThreadPoolExecutor", no_pool)
    assert np.array_equal(ex.transform(photos), pooled)


@pytest.mark.parametrize("name", CLASSICAL)
def test_every_extractor_fits_and_transforms(name, photos):
    ex = _tiny(name).fit(photos[:5], seed=0)
    feats = ex.transform(photos[4:])
    assert feats.shape == (3, ex.dim) and feats.dtype == np.float32 and np.isfinite(feats).all()
    assert ex.describe()["local_stage"]["method"] == ex.local_method
