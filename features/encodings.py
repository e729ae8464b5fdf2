"""Encodings that turn a variable-size set of local descriptors into one fixed-length vector.

Learned pieces (all seeded, all fitted on descriptors sampled from training images only):

* :func:`kmeans` -- faiss k-means (exact nearest-centroid assignment with BLAS, multi-threaded;
  an order of magnitude faster than scikit-learn's MiniBatchKMeans at k = 1000 and exact
  rather than mini-batch). :func:`nearest` assigns new descriptors with a numpy BLAS product.
* :class:`PCA` -- descriptor PCA (no whitening): decorrelates dimensions for the diagonal GMM.
* :class:`DiagonalGMM` -- EM for a diagonal-covariance GMM, started from faiss k-means, in
  float32 numpy (scikit-learn's GaussianMixture does the same in float64, 3-4x slower).

Encoders (``fit(sample, seed)``, then ``encode(xy, desc)`` per image):

* :class:`BowEncoder` -- hard-assignment histograms, L1 or Hellinger normalised, optional
  spatial pyramid and additive-kernel feature map.
* :class:`VladEncoder` -- VLAD (Jégou et al. 2010) with intra-normalisation (Arandjelović &
  Zisserman 2013), then signed square root and L2; ``K * D`` per region.
* :class:`FisherEncoder` -- improved Fisher vectors (Perronnin et al. 2010): gradients with
  respect to means and variances, signed square root and L2; ``2 * K * D`` per region.

Spatial pyramids (Lazebnik et al. 2006)
---------------------------------------
``levels=L`` pools over grids 1x1, 2x2, ... 2^(L-1) x 2^(L-1) (``levels=3``: 1 + 4 + 16 = 21
regions). Statistics are additive, so they are computed once per finest cell and summed into
the coarser cells. For bags of words each level's histograms are divided by the image's
descriptor count and weighted as in the paper, level 0 by ``1/2^(L-1)`` and level ``l >= 1``
by ``1/2^(L-l)``; the weights sum to 1, so a whole pyramid still sums to 1 (L1) and the
intersection kernel on it is the pyramid match kernel. VLAD and Fisher vectors are
normalised per region (as in Chatfield et al. 2011) and the concatenation is scaled by
``1/sqrt(regions)`` so that it has unit L2 norm.

Additive-kernel feature maps
----------------------------
:func:`homogeneous_kernel_map` is Vedaldi & Zisserman's (2012) explicit map for the χ² and
intersection kernels (order 1, so 3 numbers per input dimension, VLFeat's default period).
A linear classifier on the mapped L1 histograms approximates the additive-kernel SVM of
Lazebnik et al.; for χ² it equals scikit-learn's ``AdditiveChi2Sampler`` with the same
sampling interval.
"""
from __future__ import annotations

import hashlib
import math
from typing import Sequence

import numpy as np
from scipy import sparse

from featbench.errors import FeatbenchError

KMEANS_ITERATIONS = 25
GMM_ITERATIONS = 20
#: A GMM variance is floored at this fraction of the data's variance in that dimension.
GMM_VARIANCE_FLOOR = 1e-3
#: Rows of the fitting sample used per cluster at most (faiss's ``max_points_per_centroid``
#: convention): more points barely move the centroids but cost time linearly.
MAX_POINTS_PER_CLUSTER = 256

NORMS = ("l1", "hellinger")
KERNEL_MAPS = ("chi2", "intersection")  # or None: no map


# --------------------------------------------------------------------------- sampling, k-means, PCA

def stable_rng(seed: int, key: str) -> np.random.Generator:
    """A generator that depends only on ``seed`` and ``key`` (an image identity), not on order."""
    digest = hashlib.sha256(f"{int(seed)}|{key}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def segment_sums(index: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """``out[i] = values[index == i].sum(axis=0)`` for ``i < n`` (a sparse one-hot product)."""
    onehot = sparse.csr_matrix((np.ones(len(index), np.float32), (index, np.arange(len(index)))),
                               shape=(n, len(index)))
    return np.asarray(onehot @ values, dtype=np.float32)


def sample_rows(x: np.ndarray, n: int | None, rng: np.random.Generator) -> np.ndarray:
    """At most ``n`` rows of ``x`` chosen without replacement, in their original order."""
    if n is None or len(x) <= n:
        return x
    return x[np.sort(rng.choice(len(x), size=n, replace=False))]


def _as_f32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


def kmeans(x: np.ndarray, k: int, seed: int, iterations: int = KMEANS_ITERATIONS) -> np.ndarray:
    """faiss k-means centroids ``float32 [k, D]`` (initial centroids drawn from ``x``, seeded)."""
    import faiss

    x = _as_f32(x)
    if len(x) < k:
        raise FeatbenchError(f"k-means with k={k} needs at least {k} training descriptors, got {len(x)}; "
                             "lower k or raise max_desc")
    km = faiss.Kmeans(x.shape[1], k, niter=iterations, seed=int(seed), verbose=False,
                      min_points_per_centroid=1, max_points_per_centroid=len(x) // k + 1)
    km.train(x)
    return km.centroids.copy()


def nearest(x: np.ndarray, centroids: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """Index of the nearest centroid (Euclidean) for every row of ``x``: ``int64 [N]``.

    ``argmin |c|^2 / 2 - x.c`` with one BLAS product per chunk: on this project's 2-core
    machines that is twice as fast as a flat faiss index (whose bundled BLAS is older).
    """
    x, centroids = _as_f32(x), _as_f32(centroids)
    half_norms = 0.5 * np.einsum("kd,kd->k", centroids, centroids)
    labels = np.empty(len(x), dtype=np.int64)
    for start in range(0, len(x), chunk):
        labels[start:start + chunk] = np.argmin(half_norms - x[start:start + chunk] @ centroids.T, axis=1)
    return labels


class PCA:
    """Principal axes of a descriptor sample (eigendecomposition of the covariance, signs fixed)."""

    def __init__(self, dim: int) -> None:
        self.dim = int(dim)

    def fit(self, x: np.ndarray) -> "PCA":
        if not 0 < self.dim <= x.shape[1]:
            raise FeatbenchError(f"pca={self.dim} must be between 1 and the descriptor dimension {x.shape[1]}")
        x = x.astype(np.float64)
        self.mean = x.mean(axis=0)
        eigval, eigvec = np.linalg.eigh(np.cov(x - self.mean, rowvar=False))
        order = np.argsort(eigval)[::-1][: self.dim]
        comps = eigvec[:, order].T
        comps *= np.sign(comps[np.arange(self.dim), np.abs(comps).argmax(axis=1)])[:, None]
        self.components = comps.astype(np.float32)
        self.mean = self.mean.astype(np.float32)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return (_as_f32(x) - self.mean) @ self.components.T


# --------------------------------------------------------------------------- diagonal GMM

class DiagonalGMM:
    """Gaussian mixture with diagonal covariances: ``weights [K]``, ``means``/``variances [K, D]``."""

    def __init__(self, k: int, iterations: int = GMM_ITERATIONS) -> None:
        self.k = int(k)
        self.iterations = iterations

    def fit(self, x: np.ndarray, seed: int) -> "DiagonalGMM":
        """EM from a k-means start (hard-assignment means, variances and weights)."""
        x = _as_f32(x)
        self.floor = (GMM_VARIANCE_FLOOR * x.var(axis=0)).astype(np.float32) + 1e-12
        labels = nearest(x, kmeans(x, self.k, seed))
        s0 = np.bincount(labels, minlength=self.k).astype(np.float32)
        s1 = segment_sums(labels, x, self.k)
        s2 = segment_sums(labels, x * x, self.k)
        self.means = np.repeat(x.mean(axis=0)[None], self.k, axis=0)  # kept by empty clusters
        self.variances = np.repeat(x.var(axis=0)[None], self.k, axis=0)
        self._m_step(s0, s1, s2, len(x))
        for _ in range(self.iterations):
            s0, s1, s2 = self._statistics(x)
            self._m_step(s0, s1, s2, len(x))
        return self

    def _m_step(self, s0: np.ndarray, s1: np.ndarray, s2: np.ndarray, n: int) -> None:
        alive = s0 > 1e-3  # a component with (almost) no mass keeps its previous parameters
        safe = np.maximum(s0, 1e-12)[:, None]
        means = s1 / safe
        variances = np.maximum(s2 / safe - means * means, self.floor)
        self.means = np.where(alive[:, None], means, self.means).astype(np.float32)
        self.variances = np.where(alive[:, None], variances, self.variances).astype(np.float32)
        weights = np.maximum(s0 / n, 1e-8)
        self.weights = (weights / weights.sum()).astype(np.float32)

    def _statistics(self, x: np.ndarray, chunk: int = 65536) -> tuple[np.ndarray, ...]:
        s0 = np.zeros(self.k, np.float64)
        s1 = np.zeros((self.k, x.shape[1]), np.float64)
        s2 = np.zeros_like(s1)
        for start in range(0, len(x), chunk):
            part = x[start:start + chunk]
            q = self.posteriors(part)
            s0 += q.sum(axis=0)
            s1 += q.T @ part
            s2 += q.T @ (part * part)
        return s0, s1, s2

    def posteriors(self, x: np.ndarray) -> np.ndarray:
        """Soft assignments ``q [N, K]`` (rows sum to 1)."""
        precision = 1.0 / self.variances
        log_p = -0.5 * ((x * x) @ precision.T - 2.0 * (x @ (self.means * precision).T)
                        + (self.means ** 2 * precision).sum(axis=1))
        log_p += np.log(self.weights) - 0.5 * np.log(self.variances).sum(axis=1)
        log_p -= log_p.max(axis=1, keepdims=True)
        q = np.exp(log_p)
        q /= q.sum(axis=1, keepdims=True)
        return q.astype(np.float32, copy=False)


# --------------------------------------------------------------------------- spatial pyramid

def pyramid_weights(levels: int) -> np.ndarray:
    """Lazebnik et al.'s level weights for ``levels`` levels (L = levels - 1): 1/2^L, then 1/2^(L-l+1)."""
    top = levels - 1
    return np.array([1.0 / 2 ** top] + [1.0 / 2 ** (top - l + 1) for l in range(1, levels)])


def pyramid_regions(levels: int) -> int:
    """Number of pooling regions: 1 + 4 + 16 + ..."""
    return sum(4 ** l for l in range(levels))


def finest_cells(xy: np.ndarray, levels: int) -> np.ndarray:
    """Row-major index of each point's cell on the finest grid (2^(levels-1) per side)."""
    n = 2 ** (levels - 1)
    cell = np.minimum((np.asarray(xy, dtype=np.float64) * n).astype(np.int64), n - 1)
    return cell[:, 1] * n + cell[:, 0]


def level_sums(cell_stats: np.ndarray, levels: int) -> list[np.ndarray]:
    """Per level, the statistics of each cell ``[4**l, ...]`` summed from the finest cells."""
    n = 2 ** (levels - 1)
    grid = cell_stats.reshape((n, n) + cell_stats.shape[1:])
    out = []
    for level in range(levels):
        m = 2 ** level
        blocks = grid.reshape((m, n // m, m, n // m) + grid.shape[2:]).sum(axis=(1, 3))
        out.append(blocks.reshape((m * m,) + grid.shape[2:]))
    return out


def check_positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise FeatbenchError(f"{name}={value!r}: expected a positive integer")
    return value


def _check_levels(levels: int) -> int:
    if not isinstance(levels, int) or not 1 <= levels <= 4:
        raise FeatbenchError(f"levels={levels!r}: expected 1 (no pyramid) to 4")
    return levels


# --------------------------------------------------------------------------- kernel maps

def _chi2_spectrum(lam: np.ndarray) -> np.ndarray:
    return 1.0 / np.cosh(np.pi * lam)


def _intersection_spectrum(lam: np.ndarray) -> np.ndarray:
    return 2.0 / (np.pi * (1.0 + 4.0 * lam * lam))


_SPECTRA = {"chi2": _chi2_spectrum, "intersection": _intersection_spectrum}


def kernel_map_interval(kernel: str, order: int = 1) -> float:
    """VLFeat's default sampling interval ``2 * pi / period`` for ``vl_homkermap``."""
    if kernel == "chi2":
        period = 5.86 * math.sqrt(order) + 3.65
    elif kernel == "intersection":
        period = 8.80 * math.sqrt(order + 4.44) - 12.6
    else:
        raise FeatbenchError(f"unknown kernel map '{kernel}'; known: {', '.join(KERNEL_MAPS)}")
    return 2 * math.pi / period


def homogeneous_kernel_map(x: np.ndarray, kernel: str, order: int = 1) -> np.ndarray:
    """Explicit feature map of an additive homogeneous kernel for non-negative ``x [N, D]``.

    Output ``[N, D * (2 * order + 1)]`` laid out as scikit-learn's AdditiveChi2Sampler:
    ``[sqrt(x L k(0)), sqrt(2 x L k(L)) cos(L log x), ... sin(L log x), ...]``; zeros map to zeros.
    """
    if np.any(x < 0):
        raise FeatbenchError("additive kernel maps need non-negative inputs (histograms)")
    spectrum = _SPECTRA[kernel]
    interval = kernel_map_interval(kernel, order)
    x = np.asarray(x, dtype=np.float64)
    positive = x > 0
    safe = np.where(positive, x, 1.0)
    log_x = np.log(safe)
    blocks = [np.sqrt(x * interval * spectrum(0.0))]
    for j in range(1, order + 1):
        amplitude = np.where(positive, np.sqrt(2 * x * interval * spectrum(j * interval)), 0.0)
        blocks += [amplitude * np.cos(j * interval * log_x), amplitude * np.sin(j * interval * log_x)]
    return np.concatenate(blocks, axis=-1).astype(np.float32)


# --------------------------------------------------------------------------- encoders

class BowEncoder:
    """Bag of visual words: hard assignment, pyramid histograms, L1/Hellinger, kernel map."""

    def __init__(self, k: int, levels: int = 1, norm: str = "hellinger", kmap: str | None = None) -> None:
        if norm not in NORMS:
            raise FeatbenchError(f"norm={norm!r}: expected one of {', '.join(NORMS)}")
        if kmap not in KERNEL_MAPS + (None,):
            raise FeatbenchError(f"kmap={kmap!r}: expected none or one of {', '.join(KERNEL_MAPS)}")
        if kmap is not None and norm != "l1":
            raise FeatbenchError("kmap applies to L1 histograms: use norm=l1 with kmap "
                                 "(Hellinger is itself the explicit map of the Bhattacharyya kernel)")
        self.k, self.levels, self.norm, self.kmap = check_positive("k", k), _check_levels(levels), norm, kmap

    @property
    def dim(self) -> int:
        return self.k * pyramid_regions(self.levels) * (1 if self.kmap is None else 3)

    def fit(self, sample: np.ndarray, seed: int) -> "BowEncoder":
        self.centroids = kmeans(sample, self.k, seed)
        return self

    def encode(self, xy: np.ndarray, desc: np.ndarray) -> np.ndarray:
        words = nearest(desc, self.centroids)
        cells = finest_cells(xy, self.levels)
        n_cells = 4 ** (self.levels - 1)
        counts = np.bincount(cells * self.k + words, minlength=n_cells * self.k).reshape(n_cells, self.k)
        hist = pyramid_histogram(counts.astype(np.float64), self.levels)
        if self.norm == "hellinger":
            return np.sqrt(hist).astype(np.float32)
        if self.kmap is not None:
            return homogeneous_kernel_map(hist[None], self.kmap)[0]
        return hist.astype(np.float32)


def pyramid_histogram(cell_counts: np.ndarray, levels: int) -> np.ndarray:
    """Weighted, count-normalised pyramid of word histograms (sums to 1 unless empty)."""
    total = cell_counts.sum()
    weights = pyramid_weights(levels)
    parts = [w * h.ravel() / max(total, 1.0) for w, h in zip(weights, level_sums(cell_counts, levels))]
    return np.concatenate(parts)


def power_l2(v: np.ndarray) -> np.ndarray:
    """Signed square root, then L2 normalisation along the last axis (zero vectors stay zero)."""
    v = np.sign(v) * np.sqrt(np.abs(v))
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def _join_regions(regions: Sequence[np.ndarray]) -> np.ndarray:
    """Concatenate per-region (unit L2) codes so that the whole has unit norm."""
    return (np.concatenate([r.ravel() for r in regions]) / math.sqrt(len(regions))).astype(np.float32)


class _ProjectedEncoder:
    """Shared by VLAD and Fisher vectors: optional PCA of descriptors before the model."""

    def __init__(self, k: int, pca: int | None = None, levels: int = 1) -> None:
        self.k, self.levels = check_positive("k", k), _check_levels(levels)
        self.pca_dim = None if pca is None else check_positive("pca", pca)

    def _fit_pca(self, sample: np.ndarray) -> np.ndarray:
        self.pca = PCA(self.pca_dim).fit(sample) if self.pca_dim else None
        self.input_dim = sample.shape[1] if self.pca is None else self.pca_dim
        return self._project(sample)

    def _project(self, desc: np.ndarray) -> np.ndarray:
        return _as_f32(desc) if self.pca is None else self.pca.transform(desc)


class VladEncoder(_ProjectedEncoder):
    """VLAD: per-word residual sums, intra-normalised, signed sqrt, L2; ``K * D`` per region."""

    @property
    def dim(self) -> int:
        return self.k * self.input_dim * pyramid_regions(self.levels)

    def fit(self, sample: np.ndarray, seed: int) -> "VladEncoder":
        self.centroids = kmeans(self._fit_pca(sample), self.k, seed)
        return self

    def encode(self, xy: np.ndarray, desc: np.ndarray) -> np.ndarray:
        x = self._project(desc)
        words = nearest(x, self.centroids)
        slots = finest_cells(xy, self.levels) * self.k + words
        n_slots = 4 ** (self.levels - 1) * self.k
        counts = np.bincount(slots, minlength=n_slots).astype(np.float32)
        sums = segment_sums(slots, x, n_slots)
        cells = np.concatenate([counts[:, None], sums], axis=1).reshape(-1, self.k, 1 + x.shape[1])
        regions = []
        for level in level_sums(cells, self.levels):
            residuals = level[..., 1:] - level[..., :1] * self.centroids  # [R, K, D]
            intra = residuals / np.maximum(np.linalg.norm(residuals, axis=-1, keepdims=True), 1e-12)
            regions += list(power_l2(intra.reshape(len(level), -1)))
        return _join_regions(regions)


class FisherEncoder(_ProjectedEncoder):
    """Improved Fisher vector of a diagonal GMM: mean and variance gradients; ``2 * K * D`` per region."""

    @property
    def dim(self) -> int:
        return 2 * self.k * self.input_dim * pyramid_regions(self.levels)

    def fit(self, sample: np.ndarray, seed: int) -> "FisherEncoder":
        self.gmm = DiagonalGMM(self.k).fit(self._fit_pca(sample), seed)
        return self

    def encode(self, xy: np.ndarray, desc: np.ndarray) -> np.ndarray:
        x = self._project(desc)
        q = self.gmm.posteriors(x)
        cells = finest_cells(xy, self.levels)
        stats = np.zeros((4 ** (self.levels - 1), self.k, 1 + 2 * x.shape[1]), np.float32)
        groups = [(0, slice(None))] if self.levels == 1 else [(c, cells == c) for c in np.unique(cells)]
        for cell, members in groups:
            qc, xc = q[members], x[members]
            stats[cell, :, 0] = qc.sum(axis=0)
            stats[cell, :, 1:1 + x.shape[1]] = qc.T @ xc
            stats[cell, :, 1 + x.shape[1]:] = qc.T @ (xc * xc)
        regions = [power_l2(self._fisher(region)) for level in level_sums(stats, self.levels) for region in level]
        return _join_regions(regions)

    def _fisher(self, stats: np.ndarray) -> np.ndarray:
        """Fisher vector ``[2 * K * D]`` from one region's ``[K, 1 + 2D]`` statistics (S0, S1, S2)."""
        d = (stats.shape[1] - 1) // 2
        s0, s1, s2 = stats[:, :1], stats[:, 1:1 + d], stats[:, 1 + d:]
        n = max(float(s0.sum()), 1.0)
        mu, var, w = self.gmm.means, self.gmm.variances, self.gmm.weights[:, None]
        sigma = np.sqrt(var)
        d_mean = (s1 - mu * s0) / (sigma * n * np.sqrt(w))
        d_var = ((s2 - 2 * mu * s1 + mu * mu * s0) / var - s0) / (n * np.sqrt(2 * w))
        return np.concatenate([d_mean.ravel(), d_var.ravel()])
