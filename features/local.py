"""Local descriptors for the bag-of-words family: SIFT (sparse and dense), SURF, ORB.

Everything here works on a grayscale ``uint8`` image and returns :class:`LocalFeatures`:
descriptor rows plus their positions normalised to ``[0, 1)`` (for spatial pyramids).

Resize policy (``max_side``)
----------------------------
Before anything else the RGB image is converted to grey (ITU-R 601 luma) and shrunk with
area interpolation so that its longer side is at most ``max_side`` pixels; smaller images
are never enlarged. The default, 300 px, keeps 15-Scene images (about 256 px) at their
native size, brings the larger Office and Caltech photos to a common scale (the scale of
the 300 px Amazon product shots), and bounds the number of dense descriptors -- hence the
time -- per image (about 12k-18k at the default dense-SIFT grid). ``max_side=none`` keeps
the original size.

Methods
-------
* ``sift``: OpenCV's DoG detector and SIFT descriptor (``cv2.SIFT``), rotation-invariant.
* ``sift-dense``: PHOW-style dense SIFT (Bosch et al. 2007; VLFeat ``vl_phow``) on a
  regular grid (``step`` px) at several bin sizes (``sizes``, px; the descriptor spans
  4x4 bins, so bin size 4 is a 16 px patch). All scales share the same centres, as in
  PHOW. Implemented here (:func:`dense_sift`) as VLFeat's "fast" dense SIFT: per scale the
  image is smoothed (sigma = bin size / 6), gradients are binned into 8 orientations with
  linear interpolation, each orientation map is convolved with a separable triangular
  kernel (bilinear spatial binning), and the 4x4x8 values are read off at the bin centres.
  Computing the same descriptors with ``cv2.SIFT.compute`` on a keypoint grid is several
  times slower (README, "Measured design choices"), and it ties the smoothing to SIFT's
  pyramid rather than to the bin size. Both agree in layout and orientation convention (see
  the tests). Sizes differ in meaning: an OpenCV keypoint of ``size`` s has bins 1.5 s px
  wide, so "dense SIFT at 16 px" written with ``cv2.KeyPoint(x, y, 16)`` is ``sizes=24`` here
  (a 96 px patch), not ``sizes=4`` (16 px).
  Descriptors are L2-normalised, clipped at 0.2 and renormalised (Lowe). Windows with
  almost no gradient energy (below PHOW's contrast threshold) are *flat*; ``flat`` says what
  becomes of them:

  - ``zero`` (default, PHOW's ``vl_phow``): an all-zero descriptor, which an encoder assigns
    to one word; that word's share of a histogram is then the image's blank fraction.
  - ``drop``: left out of the image's descriptors, so histograms count (and are normalised
    by) the textured windows only.
  - ``keep``: no threshold; every window is normalised as it is, noise included, which is
    what ``cv2.SIFT.compute`` on a grid does (only an exactly constant window stays zero).

  Flat windows are rare in photos and common in drawings: 2-4 % of a PACS photo's windows,
  12-27 % of a cartoon's, 31-56 % of a sketch's (white paper). With ``zero`` the blank word's
  share follows that; on PACS it is still not what makes the default pyramid fail from photos
  to drawings (the patch size is; README, "Classical pipelines under strong domain shift").
* ``surf`` / ``surf-dense``: Fast-Hessian keypoints or a dense grid, described by
  :mod:`featbench.features.surf` (OpenCV's pip builds have no SURF). Dense SURF is
  upright, like dense SIFT.
* ``orb``: OpenCV's ORB (FAST + rBRIEF). Its 256 binary tests are unpacked into 256 float
  bits in {0, 1}: the squared Euclidean distance between two such vectors *is* their
  Hamming distance, so Euclidean k-means and nearest-centroid assignment stay
  Hamming-consistent (centroids become per-bit frequencies).

``root=true`` turns (unit-L2) SIFT or SURF into RootSIFT (Arandjelović & Zisserman 2012):
L1-normalise the absolute values, keep the sign, take square roots; the result has unit L2
norm and Euclidean distances between RootSIFT vectors compare the originals with the
Hellinger kernel.

:class:`LocalStage` bundles a method with its parameters and has its own config ``key``,
so descriptors can be memoised (or cached on disk) independently of the encoding that
consumes them.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import threading
from typing import Any, NamedTuple, Sequence

import cv2
import numpy as np

from featbench.datasets.images import resize_max_side, to_gray
from featbench.errors import FeatbenchError

from .base import as_image

METHODS = ("sift", "sift-dense", "surf", "surf-dense", "orb")
#: What dense SIFT does with flat (low-contrast) windows; see the module docstring.
FLAT_MODES = ("zero", "drop", "keep")

#: PHOW (``vl_phow``) defaults: Gaussian pre-smoothing sigma = bin size / MAGNIF and the
#: contrast threshold below which a window is flat (its descriptor is set to zero).
PHOW_MAGNIF = 6.0
PHOW_CONTRAST = 0.005
SIFT_CLIP = 0.2
#: OpenCV ORB's default edgeThreshold (= patchSize): keypoints keep this far from the borders.
ORB_EDGE = 31


class LocalFeatures(NamedTuple):
    """Descriptors of one image: ``xy`` float32 ``[N, 2]`` in ``[0, 1)``, ``desc`` float16 ``[N, D]``.

    Descriptors are always rounded to float16 (relative precision 2^-11, far below the
    descriptors' own noise): it halves the memory of memoised descriptors, and features
    come out identical whether the descriptors were memoised or recomputed.
    """

    xy: np.ndarray
    desc: np.ndarray

    @property
    def nbytes(self) -> int:
        return self.xy.nbytes + self.desc.nbytes


def prepare_gray(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """The resize policy: grey ``uint8``, longer side shrunk to ``max_side`` (never enlarged)."""
    return resize_max_side(to_gray(np.asarray(image)), max_side)


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit L2 norm; all-zero rows stay zero."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


def root_descriptors(desc: np.ndarray) -> np.ndarray:
    """RootSIFT: signed square root of the L1-normalised rows (unit L2 unless all zero)."""
    desc = np.asarray(desc, dtype=np.float32)
    if desc.size and desc.min() >= 0:  # SIFT: no signs to carry (the common, faster case)
        return np.sqrt(desc / np.maximum(desc.sum(axis=1, keepdims=True), 1e-12))
    magnitude = np.abs(desc)
    l1 = np.maximum(magnitude.sum(axis=1, keepdims=True), 1e-12)
    return (np.sign(desc) * np.sqrt(magnitude / l1)).astype(np.float32)


def _normalized_xy(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    xy = points / np.array([w, h], dtype=np.float64)
    return np.clip(xy, 0.0, np.nextafter(1.0, 0.0)).astype(np.float32)


# --------------------------------------------------------------------------- dense SIFT

def grid_centres(shape: tuple[int, int], step: int, margin: int) -> np.ndarray:
    """Integer ``(x, y)`` centres every ``step`` px, ``margin`` px from each border.

    The grid is centred in the image so the leftover is split between both borders.
    """
    def axis(n: int) -> np.ndarray:
        span = n - 1 - 2 * margin
        if span < 0:
            return np.zeros(0, dtype=np.int64)
        start = margin + (span % step) // 2
        return np.arange(start, n - margin, step, dtype=np.int64)

    ys, xs = axis(shape[0]), axis(shape[1])
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


def _orientation_maps(gray01: np.ndarray, sigma: float) -> np.ndarray:
    """Gradient magnitude split into 8 orientation channels ``[H, W, 8]`` (linear in angle).

    Angles follow OpenCV's SIFT: x to the right, y up, counter-clockwise.
    """
    img = cv2.GaussianBlur(gray01, (0, 0), sigma) if sigma > 0 else gray01
    pad = cv2.copyMakeBorder(img, 1, 1, 1, 1, cv2.BORDER_REPLICATE)
    gx = 0.5 * (pad[1:-1, 2:] - pad[1:-1, :-2])
    gy = 0.5 * (pad[:-2, 1:-1] - pad[2:, 1:-1])
    mag, ang = cv2.cartToPolar(gx, gy)
    t = ang.ravel() * np.float32(8 / (2 * math.pi))
    lower = np.floor(t)
    frac = t - lower
    lower = lower.astype(np.int64) % 8
    pixels = np.arange(t.size)
    mag = mag.ravel()
    maps = np.zeros((t.size, 8), dtype=np.float32)
    maps[pixels, lower] = mag * (1 - frac)
    maps[pixels, (lower + 1) % 8] += mag * frac
    return maps.reshape(img.shape + (8,))


def _triangle_kernel(bin_size: int) -> np.ndarray:
    """Bilinear spatial binning as a convolution: weights ``1 - |d| / b``, summing to 1."""
    d = np.arange(-bin_size + 1, bin_size, dtype=np.float32)
    k = 1 - np.abs(d) / bin_size
    return (k / k.sum()).reshape(-1, 1)


def _sift_at_scale(maps: np.ndarray, centres: np.ndarray, bin_size: int) -> np.ndarray:
    """Raw (unnormalised) 128-D descriptors at ``centres`` for one bin size."""
    k = _triangle_kernel(bin_size)
    binned = cv2.sepFilter2D(maps, -1, k, k, borderType=cv2.BORDER_REPLICATE)
    offsets = np.floor((np.arange(4) - 1.5) * bin_size + 0.5).astype(np.int64)
    ys = centres[:, 1, None, None] + offsets[None, :, None]  # [N, 4 rows, 1]
    xs = centres[:, 0, None, None] + offsets[None, None, :]  # [N, 1, 4 cols]
    return binned[ys, xs].reshape(len(centres), 128)  # (row, col, orientation), like OpenCV


def normalize_sift(raw: np.ndarray, contrast_threshold: float = 0.0) -> np.ndarray:
    """Lowe's normalisation (L2, clip 0.2, L2); rows whose raw norm is below the threshold become 0."""
    norms = np.linalg.norm(raw, axis=1, keepdims=True)
    desc = np.minimum(raw / np.maximum(norms, 1e-12), SIFT_CLIP)
    desc = l2_normalize(desc)
    desc[norms[:, 0] < contrast_threshold] = 0
    return desc.astype(np.float32)


def dense_sift(gray: np.ndarray, step: int = 4, sizes: Sequence[int] = (4, 6, 8, 10),
               magnif: float = PHOW_MAGNIF, contrast_threshold: float = PHOW_CONTRAST
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PHOW dense SIFT of a grey ``uint8`` image.

    Returns ``(centres [N, 2] int (x, y), bin_sizes [N], desc float32 [N, 128])``; every
    bin size is computed at the same centres (the grid keeps ``ceil(1.5 * max(sizes))`` px
    from the borders, so every bin centre of the largest descriptor lies in the image).
    The contrast threshold applies to the raw descriptor norm with intensities in [0, 1] and
    bins holding triangle-weighted *mean* gradient magnitudes: 0.005 zeroes windows whose
    gradients average below about 0.3 grey levels per pixel.
    """
    sizes = [int(s) for s in sizes]
    if step < 1 or not sizes or min(sizes) < 1:
        raise FeatbenchError(f"dense SIFT: step and sizes must be positive (step={step}, sizes={sizes})")
    centres = grid_centres(gray.shape, step, math.ceil(1.5 * max(sizes)))
    gray01 = gray.astype(np.float32) / 255.0
    all_desc, all_sizes = [], []
    for b in sizes:
        sigma = math.sqrt(max((b / magnif) ** 2 - 0.25, 0.0))  # the image already has ~0.5 blur
        raw = _sift_at_scale(_orientation_maps(gray01, sigma), centres, b)
        all_desc.append(normalize_sift(raw, contrast_threshold))
        all_sizes.append(np.full(len(centres), b))
    return (np.tile(centres, (len(sizes), 1)), np.concatenate(all_sizes),
            np.concatenate(all_desc) if all_desc else np.zeros((0, 128), np.float32))


# --------------------------------------------------------------------------- sparse detectors

def sparse_sift(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV DoG keypoints and SIFT descriptors: ``(points [N, 2], desc float32 unit-L2 [N, 128])``."""
    kps, desc = cv2.SIFT_create().detectAndCompute(gray, None)
    if desc is None or not kps:
        return np.zeros((0, 2)), np.zeros((0, 128), np.float32)
    return np.array([kp.pt for kp in kps]), l2_normalize(desc.astype(np.float32))


def orb_bits(gray: np.ndarray, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """ORB keypoints and their 256 binary tests as float bits: ``(points [N, 2], bits [N, 256])``.

    ORB finds no keypoint within ``edgeThreshold`` (31) px of a border, so an image whose shorter
    side is under 63 px has none; it is answered with the empty set before OpenCV is called (its
    scale pyramid fails on a 1-px side: ``inv_scale_x > 0``).
    """
    if min(gray.shape[:2]) < 2 * ORB_EDGE + 1:
        return np.zeros((0, 2)), np.zeros((0, 256), np.float32)
    kps, desc = cv2.ORB_create(nfeatures=n_features).detectAndCompute(gray, None)
    if desc is None or not kps:
        return np.zeros((0, 2)), np.zeros((0, 256), np.float32)
    return np.array([kp.pt for kp in kps]), np.unpackbits(desc, axis=1).astype(np.float32)


def surf_features(gray: np.ndarray, dense: bool, step: int, sizes: Sequence[float],
                  hessian: float, extended: bool) -> tuple[np.ndarray, np.ndarray]:
    """SURF through :mod:`featbench.features.surf`: ``(points [N, 2], desc [N, 64|128])``."""
    from featbench.features import surf

    if dense:
        grid = surf.dense_keypoints(gray.shape, step, list(sizes))
        kps, desc = surf.detect_and_compute(gray, extended=extended, upright=True, keypoints=grid)
    else:
        kps, desc = surf.detect_and_compute(gray, hessian_threshold=hessian, extended=extended)
    return np.asarray(kps)[:, :2].reshape(-1, 2), np.asarray(desc, dtype=np.float32)


# --------------------------------------------------------------------------- the stage

@dataclasses.dataclass(frozen=True)
class LocalStage:
    """One local-descriptor configuration: what :meth:`compute` does to an RGB image.

    ``key`` identifies the descriptors it produces (method, parameters, ``VERSION``), so a
    cache of descriptors can be shared by every encoding built on the same stage.
    Parameters a method does not use are ignored (and left out of the key).
    """

    VERSION = "1"

    method: str
    max_side: int | None = 300
    root: bool = False
    step: int = 4
    sizes: tuple = (4, 6, 8, 10)
    hessian: float = 400.0
    extended: bool = False
    n_features: int = 1500
    flat: str = "zero"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise FeatbenchError(f"unknown local descriptor '{self.method}'; known: {', '.join(METHODS)}")
        if self.root and self.method == "orb":
            raise FeatbenchError("root=true applies to SIFT and SURF, not to ORB's binary tests")
        sizes = tuple(self.sizes) if isinstance(self.sizes, (list, tuple)) else (self.sizes,)
        object.__setattr__(self, "sizes", sizes)
        if self.max_side is not None and (not isinstance(self.max_side, int) or self.max_side < 16):
            raise FeatbenchError(f"max_side={self.max_side!r}: expected an integer >= 16 or none")
        if self.method.endswith("-dense"):
            self._check_grid()
        if self.flat not in FLAT_MODES:
            raise FeatbenchError(f"flat={self.flat!r}: expected one of {', '.join(FLAT_MODES)}")

    def _check_grid(self) -> None:
        size_type = int if self.method == "sift-dense" else (int, float)  # SIFT bins are whole pixels
        sizes_ok = bool(self.sizes) and all(isinstance(s, size_type) and s > 0 for s in self.sizes)
        if not (isinstance(self.step, int) and self.step >= 1 and sizes_ok):
            raise FeatbenchError(f"{self.method}: step must be a positive integer and sizes positive "
                                 f"{'integers' if size_type is int else 'numbers'} "
                                 f"(got step={self.step!r}, sizes={self.sizes!r})")

    def relevant_params(self) -> dict[str, Any]:
        used = {"method", "max_side"}
        if self.method != "orb":
            used.add("root")
        if self.method.endswith("-dense"):
            used |= {"step", "sizes"}
        if self.method.startswith("surf"):
            used.add("extended")
        if self.method == "surf":
            used.add("hessian")
        if self.method == "orb":
            used.add("n_features")
        if self.method == "sift-dense" and self.flat != "zero":  # added later: the default keeps old keys
            used.add("flat")
        return {k: v for k, v in dataclasses.asdict(self).items() if k in used}

    @property
    def key(self) -> str:
        blob = json.dumps({"version": self.VERSION, **self.relevant_params()}, sort_keys=True, default=list)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def dim(self) -> int:
        if self.method == "orb":
            return 256
        if self.method.startswith("surf"):
            return 128 if self.extended else 64
        return 128

    def compute(self, image: np.ndarray) -> LocalFeatures:
        """Descriptors (float16) and normalised positions of one RGB or grey ``uint8`` image."""
        gray = prepare_gray(image, self.max_side)
        if self.method == "sift-dense":
            points, _, desc = dense_sift(gray, self.step, self.sizes,
                                         contrast_threshold=0.0 if self.flat == "keep" else PHOW_CONTRAST)
            if self.flat == "drop":
                textured = desc.any(axis=1)
                points, desc = points[textured], desc[textured]
        elif self.method == "sift":
            points, desc = sparse_sift(gray)
        elif self.method == "orb":
            points, desc = orb_bits(gray, self.n_features)
        else:
            points, desc = surf_features(gray, self.method == "surf-dense", self.step, self.sizes,
                                         self.hessian, self.extended)
        if self.root:
            desc = root_descriptors(desc)
        return LocalFeatures(_normalized_xy(points, gray.shape), np.ascontiguousarray(desc, dtype=np.float16))


    def keypoints(self, image: np.ndarray, limit: int = 400) -> dict[str, Any]:
        """Where this stage describes an image, for drawing (``Extractor.visualise``).

        Sparse methods: ``{"kind": "keypoints", "shape": [h, w], "kps": float32 [N, 4], "n_total"}``,
        rows ``x, y, size, angle`` in pixels of the resized grey image (``shape``); ``size`` is the
        keypoint's diameter and ``angle`` its orientation in degrees, clockwise on screen from the
        x axis (OpenCV's convention; -1 when none); at most ``limit``, strongest response first.
        Dense methods: ``{"kind": "dense-grid", "shape", "centres": int [N, 2], "sizes": [S]}``:
        every centre is described at every patch diameter in ``sizes`` (px).
        """
        gray = prepare_gray(image, self.max_side)
        shape = np.array(gray.shape, dtype=np.int64)
        if self.method == "sift-dense":
            centres = grid_centres(gray.shape, self.step, math.ceil(1.5 * max(self.sizes)))
            return {"kind": "dense-grid", "shape": shape, "centres": centres,
                    "sizes": 4.0 * np.asarray(self.sizes, dtype=np.float32)}  # 4x4 bins per descriptor
        if self.method == "surf-dense":
            from featbench.features import surf

            grid = surf.dense_keypoints(gray.shape, self.step, [self.sizes[0]])
            return {"kind": "dense-grid", "shape": shape, "centres": grid[:, :2].astype(np.int64),
                    "sizes": np.asarray(self.sizes, dtype=np.float32) * 20 * 1.2 / 9}  # the 20s window
        if self.method == "surf":
            from featbench.features import surf

            kps, _ = surf.detect_and_compute(gray, hessian_threshold=self.hessian, extended=self.extended)
            rows, response = kps[:, [0, 1, 2, 3]], kps[:, 4]
        else:
            detector = cv2.SIFT_create() if self.method == "sift" else cv2.ORB_create(nfeatures=self.n_features)
            found = detector.detect(gray, None)
            rows = np.array([(k.pt[0], k.pt[1], k.size, k.angle) for k in found]).reshape(-1, 4)
            response = np.array([k.response for k in found])
        order = np.argsort(-response, kind="stable")[:limit]
        return {"kind": "keypoints", "shape": shape, "kps": rows[order].astype(np.float32),
                "n_total": np.int64(len(rows))}


# --------------------------------------------------------------------------- memo

def image_key(item: Any) -> str:
    """Identity of an image item: its ``uid`` (dataset records) or a hash of its pixels."""
    uid = getattr(item, "uid", None)
    if uid:
        return str(uid)
    pixels = np.ascontiguousarray(load_pixels(item))
    digest = hashlib.sha256(f"{pixels.shape}{pixels.dtype}".encode())
    digest.update(pixels.tobytes())
    return "px:" + digest.hexdigest()[:32]


load_pixels = as_image  # one helper for "an array, or a record with load()"


class DescriptorMemo:
    """Bounded in-memory store of :class:`LocalFeatures` by image key, bridging ``fit`` and ``transform``.

    It fills up to ``max_bytes`` and then refuses new entries rather than evicting: the
    runner transforms the training images in the order it fitted on them, and under LRU
    that order evicts every entry just before it is needed. :meth:`take` hands an entry out
    and forgets it, so the memory is released as the transform pass goes. (A disk cache can
    key the same objects by ``(LocalStage.key, image key)``.)
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self._items: dict[str, LocalFeatures] = {}
        self._lock = threading.Lock()  # describe workers take entries concurrently

    def __len__(self) -> int:
        return len(self._items)

    def put(self, key: str, feats: LocalFeatures) -> bool:
        with self._lock:
            if key in self._items or self.nbytes + feats.nbytes > self.max_bytes:
                return False
            self._items[key] = feats
            self.nbytes += feats.nbytes
            return True

    def take(self, key: str) -> LocalFeatures | None:
        with self._lock:
            feats = self._items.pop(key, None)
            if feats is not None:
                self.nbytes -= feats.nbytes
            return feats
