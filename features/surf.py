"""SURF keypoints and descriptors (Bay et al. 2008), following OpenCV's ``surf.cpp``.

Every pip build of OpenCV leaves SURF out (``cv2.xfeatures2d.SURF_create`` raises), so
featbench carries its own. It follows OpenCV's implementation
(``opencv_contrib/modules/xfeatures2d/src/surf.cpp``) step by step, so parameters mean
what they mean there, and depends on numpy, numba and cv2 only.

Input is a ``uint8`` grey image with intensities 0..255 (an RGB or RGBA ``uint8`` image is
converted with ``cv2.cvtColor``). :func:`detect_and_compute` returns

* ``kps``: float64 ``[N, 7]``, columns ``x, y, size, angle, response, octave, laplacian``
  (:data:`KEYPOINT_COLUMNS`);
* ``desc``: float32 ``[N, 64]`` (``[N, 128]`` when ``extended``), each row of unit length.

Conventions kept from OpenCV
----------------------------
* Integral image of the 0..255 intensities (``cv2.integral``; int32 like OpenCV, float64
  for images of more than 8.4 Mpixel, where int32 sums would overflow).
* Fast-Hessian: box filters of size ``(9 + 6*layer) << octave`` sampled every
  ``1 << octave`` pixels; ``n_octave_layers + 2`` layers per octave. Each box lobe is
  weighted by ``±1/area`` (OpenCV's ``resizeHaarPattern``: rounded, centred lobes), and
  ``det = Dxx*Dyy - 0.81*Dxy**2`` -- so ``hessian_threshold=400`` selects what it selects in
  OpenCV. The Laplacian sign is the sign of ``Dxx + Dyy``.
* Maxima: ``det > hessian_threshold`` and strictly greater than its 26 neighbours in the
  3x3x3 neighbourhood, with OpenCV's margins; one Newton step on a 3-D quadratic
  (Brown & Lowe, OpenCV's ``interpolateKeypoint``) refines x, y and size, and points whose
  offset exceeds one sample in any direction are dropped. ``response`` is the sampled
  (not interpolated) determinant; ``size`` is rounded to an integer. Keypoints are sorted
  like OpenCV's ``KeypointGreater`` (response, size, octave descending, then y descending,
  x ascending).
* Orientation: Haar responses of size ``4s`` (``s = 1.2*size/9``) at the grid points of a
  disc of radius ``6s``, Gaussian-weighted (sigma 2.5 in units of ``s``); a 60-degree window
  slides in 5-degree steps and the longest summed vector gives the angle in degrees,
  0..360, of the dominant gradient in image coordinates (y down; OpenCV computes
  ``atan2(-sum_y, sum_x)`` from a top-minus-bottom Haar y response). Like OpenCV's SIFT
  angles it turns clockwise on screen: rotating the image 90 degrees counter-clockwise
  subtracts 90 from every angle.
* ``upright=True`` skips the orientation; OpenCV then stores ``angle = 270`` (its fixed
  ``descriptor_dir = 360 - 90``, the frame that samples the window unrotated), and so do we.
* Descriptor: a ``21s x 21s`` window, rotated by the angle and sampled bilinearly
  (nearest, clamped at the image border; unrotated nearest sampling when upright), is
  area-resized to 21x21 and rounded to 8 bits; 2x2 differences give 20x20 gradients,
  weighted by a Gaussian (sigma 3.3 samples), summed over 4x4 subregions as
  ``(sum dx, sum dy, sum |dx|, sum |dy|)`` -- or, extended, each split by the sign of the
  other component -- and the vector is scaled to unit length (``1/(norm + FLT_EPSILON)``,
  so an all-flat patch gives a zero vector).
* Keypoints are dropped as OpenCV drops them: when the orientation wavelet is larger than
  the image, or (unless upright) when no orientation sample falls inside the image.

Where this deviates from OpenCV
-------------------------------
* Arithmetic is done in float64 where OpenCV uses float32 (the Hessian maps are stored as
  float32); angles use exact ``atan2`` instead of ``cv::fastAtan2``. A handful of keypoints
  can therefore differ in the last bit of ``response`` or by a degree of ``angle``.
* The 21x21 area resize is computed here from exact pixel coverage; OpenCV's ``INTER_AREA``
  ignores slivers under 1e-3 px and switches to bilinear interpolation when the window is
  smaller than 21 px (``size < 7.5``, which only happens for ``keypoints=``).
* Given ``keypoints=``, points with ``size < 2`` (whose orientation wavelet would be empty)
  are dropped as well.
* No mask argument and no OpenCL path. Work is spread over ``NUMBA_NUM_THREADS`` plain
  threads (Hessian layers, interleaved keypoints) running GIL-free numba kernels.
"""
from __future__ import annotations

import contextlib
import math
from concurrent.futures import ThreadPoolExecutor

import cv2
import numba
import numpy as np

HAAR_SIZE0 = 9  # filter size of the first layer of the first octave
HAAR_SIZE_INC = 6  # filter size increment between layers
ORI_RADIUS = 6  # radius, in units of s, of the disc of orientation samples
ORI_WIN = 60  # degrees, sliding orientation window
ORI_SEARCH_INC = 5  # degrees between window positions
ORI_SIGMA = 2.5
DESC_SIGMA = 3.3
PATCH_SZ = 20
UPRIGHT_ANGLE = 270.0  # OpenCV's descriptor_dir when upright
FLT_EPSILON = float(np.finfo(np.float32).eps)
_TASKS_PER_THREAD = 4  # descriptor tasks per thread, for load balance
KEYPOINT_COLUMNS = ("x", "y", "size", "angle", "response", "octave", "laplacian")

# Box lobes of the 9x9 filters: x1, y1, x2, y2 (exclusive), weight before area normalisation.
# Dyy is Dxx transposed, which the Hessian kernel uses.
_DXX_9 = np.array([[0, 2, 3, 7, 1], [3, 2, 6, 7, -2], [6, 2, 9, 7, 1]])
_DXY_9 = np.array([[1, 1, 4, 4, 1], [5, 1, 8, 4, -1], [1, 5, 4, 8, -1], [5, 5, 8, 8, 1]])


def _resize_pattern(pattern: np.ndarray, new_size: int) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's ``resizeHaarPattern`` for a 9x9 pattern: rounded corners and ±1/area weights."""
    ratio = np.float32(new_size) / np.float32(HAAR_SIZE0)
    corners = np.rint(ratio * pattern[:, :4].astype(np.float32)).astype(np.int64)
    area = (corners[:, 2] - corners[:, 0]) * (corners[:, 3] - corners[:, 1])
    return corners, pattern[:, 4] / area


def _layer_geometry(size: int) -> tuple[np.ndarray, ...]:
    """Edges and weights of the resized filters, as the Hessian kernel consumes them.

    ``lobes``: x edges of the three Dxx lobes (the y edges of Dyy, its transpose); ``band``:
    their common y range (x range of Dyy); ``lobe_w``: their weights. ``quads``: edges a, b,
    c, d of the Dxy quadrants [a, b) and [c, d) along both axes; ``quad_w``: weights of the
    quadrants (x [a, b), y [a, b)), (x [c, d), y [a, b)), (x [a, b), y [c, d)), (x [c, d), y [c, d)).
    """
    cxx, lobe_w = _resize_pattern(_DXX_9, size)
    cxy, quad_w = _resize_pattern(_DXY_9, size)
    lobes = np.array([cxx[0, 0], cxx[1, 0], cxx[2, 0], cxx[2, 2]], np.uint64)
    band = cxx[0, [1, 3]].astype(np.uint64)
    quads = np.array([cxy[0, 0], cxy[0, 2], cxy[1, 0], cxy[1, 2]], np.uint64)
    return lobes, band, lobe_w, quads, quad_w


def _gaussian(n: int, sigma: float) -> np.ndarray:
    """OpenCV's normalised Gaussian kernel (float32 values, as SURF uses them)."""
    return cv2.getGaussianKernel(n, sigma, ktype=cv2.CV_32F)[:, 0].astype(np.float64)


def _orientation_samples() -> tuple[np.ndarray, np.ndarray]:
    """Grid points of the disc of radius ORI_RADIUS and their Gaussian weights."""
    g = _gaussian(2 * ORI_RADIUS + 1, ORI_SIGMA)
    r = np.arange(-ORI_RADIUS, ORI_RADIUS + 1)
    i, j = np.meshgrid(r, r, indexing="ij")
    inside = i * i + j * j <= ORI_RADIUS * ORI_RADIUS
    points = np.stack([i[inside], j[inside]], axis=1).astype(np.float64)
    return points, g[i[inside] + ORI_RADIUS] * g[j[inside] + ORI_RADIUS]


_ORI_POINTS, _ORI_WEIGHTS = _orientation_samples()
_DESC_WEIGHTS = np.outer(_gaussian(PATCH_SZ, DESC_SIGMA), _gaussian(PATCH_SZ, DESC_SIGMA))


# --------------------------------------------------------------------------- Fast-Hessian


@numba.njit(cache=True)
def _lobes(e0, e1, e2, e3, w0, w1, w2):
    """Three adjacent lobes from the integral's differences at their four edges."""
    return w0 * (e1 - e0) + w1 * (e2 - e1) + w2 * (e3 - e2)


@numba.njit(cache=True)
def _box(top, bottom, x1, x2):
    """Sum over the rows between integral rows ``top`` and ``bottom``, columns [x1, x2)."""
    return bottom[x2] - bottom[x1] - top[x2] + top[x1]


@numba.njit(cache=True)
def _hessian_row(S, size, step, i, lobes, band, lobe_w, quads, quad_w, det_row):
    """Row i of one layer's determinant map (OpenCV's calcLayerDetAndTrace).

    Entry (i, j) holds the filter whose centre is nearest sample (i, j); entries whose filter
    would leave the image are left alone. Column indices are unsigned: that spares numba's
    negative-index checks, which would make this loop about five times slower.
    """
    row = i - (size // 2) // step
    if row < 0 or row > (S.shape[0] - 1 - size) // step:
        return
    margin = np.uint64((size // 2) // step)
    y = row * step
    t0, t1, t2, t3 = lobes[0], lobes[1], lobes[2], lobes[3]
    u0, u1 = band[0], band[1]
    a, b, c, d = quads[0], quads[1], quads[2], quads[3]
    w0, w1, w2 = lobe_w[0], lobe_w[1], lobe_w[2]
    q0, q1, q2, q3 = quad_w[0], quad_w[1], quad_w[2], quad_w[3]
    s_u0, s_u1 = S[y + u0], S[y + u1]
    s_t0, s_t1, s_t2, s_t3 = S[y + t0], S[y + t1], S[y + t2], S[y + t3]
    s_a, s_b, s_c, s_d = S[y + a], S[y + b], S[y + c], S[y + d]
    for col in range(np.uint64((S.shape[1] - 1 - size) // step + 1)):
        x = col * np.uint64(step)
        dxx = _lobes(s_u1[x + t0] - s_u0[x + t0], s_u1[x + t1] - s_u0[x + t1],
                     s_u1[x + t2] - s_u0[x + t2], s_u1[x + t3] - s_u0[x + t3], w0, w1, w2)
        dyy = _lobes(s_t0[x + u1] - s_t0[x + u0], s_t1[x + u1] - s_t1[x + u0],
                     s_t2[x + u1] - s_t2[x + u0], s_t3[x + u1] - s_t3[x + u0], w0, w1, w2)
        dxy = (q0 * _box(s_a, s_b, x + a, x + b) + q1 * _box(s_a, s_b, x + c, x + d)
               + q2 * _box(s_c, s_d, x + a, x + b) + q3 * _box(s_c, s_d, x + c, x + d))
        det_row[col + margin] = dxx * dyy - 0.81 * dxy * dxy


@numba.njit(cache=True, nogil=True)
def _hessian_layer(S, size, step, lobes, band, lobe_w, quads, quad_w, det):
    """One layer's determinant map ``det[H//step, W//step]``; runs without the GIL.

    The trace, whose sign is the Laplacian sign, is only needed at keypoints:
    :func:`_trace` computes it there.
    """
    for i in range(det.shape[0]):
        _hessian_row(S, size, step, i, lobes, band, lobe_w, quads, quad_w, det[i])


@numba.njit(cache=True)
def _trace(S, y, x, lobes, band, lobe_w):
    """Dxx + Dyy of the filter whose top-left corner is at (y, x)."""
    w0, w1, w2 = lobe_w[0], lobe_w[1], lobe_w[2]
    t, u = lobes + x, band + y
    dxx = _lobes(S[u[1], t[0]] - S[u[0], t[0]], S[u[1], t[1]] - S[u[0], t[1]],
                 S[u[1], t[2]] - S[u[0], t[2]], S[u[1], t[3]] - S[u[0], t[3]], w0, w1, w2)
    t, u = lobes + y, band + x
    dyy = _lobes(S[t[0], u[1]] - S[t[0], u[0]], S[t[1], u[1]] - S[t[1], u[0]],
                 S[t[2], u[1]] - S[t[2], u[0]], S[t[3], u[1]] - S[t[3], u[0]], w0, w1, w2)
    return dxx + dyy


@numba.njit(cache=True)
def _is_local_max(det, layer, i, j):
    """Whether ``det[layer, i, j]`` is strictly above its 26 neighbours."""
    v = det[layer, i, j]
    for dl in range(-1, 2):
        for di in range(-1, 2):
            for dj in range(-1, 2):
                if (dl != 0 or di != 0 or dj != 0) and det[layer + dl, i + di, j + dj] >= v:
                    return False
    return True


@numba.njit(cache=True)
def _det3(a00, a01, a02, a10, a11, a12, a20, a21, a22):
    """Determinant of the 3x3 matrix given row by row."""
    return (a00 * (a11 * a22 - a12 * a21) - a01 * (a10 * a22 - a12 * a20)
            + a02 * (a10 * a21 - a11 * a20))


@numba.njit(cache=True)
def _interpolate(n):
    """OpenCV's interpolateKeypoint on the 3x3x3 block ``n[layer, y, x]``.

    One Newton step on the quadratic fitted by central differences, solved by Cramer's
    rule. Returns (ok, dx, dy, ds) with the offset in samples; ok is False when the system
    is singular, the offset is zero or any component exceeds one sample.
    """
    bx = -(n[1, 1, 2] - n[1, 1, 0]) / 2
    by = -(n[1, 2, 1] - n[1, 0, 1]) / 2
    bs = -(n[2, 1, 1] - n[0, 1, 1]) / 2
    dxx = n[1, 1, 0] - 2 * n[1, 1, 1] + n[1, 1, 2]
    dyy = n[1, 0, 1] - 2 * n[1, 1, 1] + n[1, 2, 1]
    dss = n[0, 1, 1] - 2 * n[1, 1, 1] + n[2, 1, 1]
    dxy = (n[1, 2, 2] - n[1, 2, 0] - n[1, 0, 2] + n[1, 0, 0]) / 4
    dxs = (n[2, 1, 2] - n[2, 1, 0] - n[0, 1, 2] + n[0, 1, 0]) / 4
    dys = (n[2, 2, 1] - n[2, 0, 1] - n[0, 2, 1] + n[0, 0, 1]) / 4
    d = _det3(dxx, dxy, dxs, dxy, dyy, dys, dxs, dys, dss)
    if d == 0:
        return False, 0.0, 0.0, 0.0
    x = _det3(bx, dxy, dxs, by, dyy, dys, bs, dys, dss) / d
    y = _det3(dxx, bx, dxs, dxy, by, dys, dxs, bs, dss) / d
    s = _det3(dxx, dxy, bx, dxy, dyy, by, dxs, dys, bs) / d
    ok = (x != 0 or y != 0 or s != 0) and abs(x) <= 1 and abs(y) <= 1 and abs(s) <= 1
    return ok, x, y, s


@numba.njit(cache=True, nogil=True)
def _layer_maxima(S, det, sizes, step, octave, layer, threshold, lobes, band, lobe_w):
    """Keypoints ``[n, 7]`` (angle 0 for now) of one middle layer of an octave; runs without
    the GIL."""
    found = []
    rows, cols = det.shape[1], det.shape[2]
    size = sizes[layer]
    margin = (sizes[layer + 1] // 2) // step + 1
    half = (size // 2) // step
    for i in range(margin, rows - margin):
        det_row = det[layer, i]
        for uj in range(np.uint64(margin), np.uint64(max(cols - margin, margin))):
            response = det_row[uj]
            j = np.int64(uj)
            if response <= threshold or not _is_local_max(det, layer, i, j):
                continue
            ok, dx, dy, ds = _interpolate(det[layer - 1:layer + 2, i - 1:i + 2, j - 1:j + 2])
            if not ok:
                continue
            cy = step * (i - half) + (size - 1) * 0.5
            cx = step * (j - half) + (size - 1) * 0.5
            new_size = np.rint(size + ds * (size - sizes[layer - 1]))
            lap = np.sign(_trace(S, np.uint64(step * (i - half)), np.uint64(step * (j - half)),
                                 lobes[layer], band[layer], lobe_w[layer]))
            found.append((cx + dx * step, cy + dy * step, new_size, 0.0,
                           np.float64(response), np.float64(octave), lap))
    out = np.empty((len(found), 7))
    for k in range(len(found)):
        for m in range(7):
            out[k, m] = found[k][m]
    return out


def _layer_sizes(octave: int, n_octave_layers: int) -> np.ndarray:
    """Filter sizes of an octave's layers: ``(9 + 6*layer) << octave``."""
    return np.array([(HAAR_SIZE0 + HAAR_SIZE_INC * layer) << octave
                     for layer in range(n_octave_layers + 2)], dtype=np.int64)


def _fast_hessian(S: np.ndarray, n_octaves: int, n_octave_layers: int, threshold: float,
                  pool: ThreadPoolExecutor | None) -> np.ndarray:
    """OpenCV's fastHessianDetector: keypoints ``[N, 7]`` sorted like KeypointGreater.

    All determinant maps are computed first (one task per layer), then the maxima (one task
    per middle layer). Layers whose filter is larger than the image stay zero, as in OpenCV.
    """
    img_h, img_w = S.shape[0] - 1, S.shape[1] - 1
    layer_tasks, maxima_tasks = [], []
    for octave in range(n_octaves):
        step = 1 << octave
        sizes = _layer_sizes(octave, n_octave_layers)
        det = np.zeros((len(sizes), img_h // step, img_w // step), np.float32)
        lobes, band, lobe_w, quads, quad_w = map(np.stack, zip(*map(_layer_geometry, sizes)))
        layer_tasks += [(S, size, step, lobes[layer], band[layer], lobe_w[layer], quads[layer],
                         quad_w[layer], det[layer])
                        for layer, size in enumerate(sizes) if size <= min(img_h, img_w)]
        maxima_tasks += [(S, det, sizes, step, octave, layer, threshold, lobes, band, lobe_w)
                         for layer in range(1, n_octave_layers + 1)]
    _run(pool, _hessian_layer, layer_tasks)
    kps = np.concatenate([np.empty((0, 7))] + _run(pool, _layer_maxima, maxima_tasks))
    x, y, size, _, response, octave, _ = kps.T
    return kps[np.lexsort((x, -y, -octave, -size, -response))]


# ------------------------------------------------------------------ orientation, descriptor


@numba.njit(cache=True)
def _degrees_0_360(y, x):
    """``atan2(y, x)`` in degrees, in [0, 360)."""
    a = math.degrees(math.atan2(y, x))
    if a < 0:
        a += 360.0
    return 0.0 if a >= 360.0 else a + 0.0


@numba.njit(cache=True)
def _haar_xy(S, y, x, size):
    """OpenCV's orientation wavelets over the ``size`` square at (y, x), per unit area.

    Returns (right half - left half, top half - bottom half) from the 3x3 integral corners.
    """
    half = size // 2
    norm = 1.0 / (half * size)
    y0, x0 = np.uint64(y), np.uint64(x)
    y1, x1 = y0 + np.uint64(half), x0 + np.uint64(half)
    y2, x2 = y0 + np.uint64(size), x0 + np.uint64(size)
    right = S[y2, x2] - S[y2, x1] - S[y0, x2] + S[y0, x1]
    left = S[y2, x1] - S[y2, x0] - S[y0, x1] + S[y0, x0]
    top = S[y1, x2] - S[y1, x0] - S[y0, x2] + S[y0, x0]
    bottom = S[y2, x2] - S[y2, x0] - S[y1, x2] + S[y1, x0]
    return (right - left) * norm, (top - bottom) * norm


@numba.njit(cache=True)
def _circular_window_sum(prefix, lo, hi):
    """Sum of circular histogram bins lo..hi (inclusive, may wrap) from its prefix sums."""
    n = prefix.shape[0] - 1
    if lo < 0:
        return prefix[hi + 1] + prefix[n] - prefix[n + lo]
    if hi >= n:
        return prefix[n] - prefix[lo] + prefix[hi + 1 - n]
    return prefix[hi + 1] - prefix[lo]


@numba.njit(cache=True)
def _orientation(S, cx, cy, s, grad_size, ori_points, ori_weights):
    """Dominant direction in degrees (OpenCV SURF convention); ok False if no sample fits.

    Samples are binned by their rounded angle, as OpenCV compares ``cvRound(angle)`` with
    the window centre; prefix sums over the circular histogram then give each 60-degree
    window (bins within 29 degrees of its centre) in constant time.
    """
    offset = (grad_size - 1) / 2
    prefix_x = np.zeros(361)
    prefix_y = np.zeros(361)
    count = 0
    for k in range(ori_points.shape[0]):
        x = int(np.rint(cx + ori_points[k, 0] * s - offset))
        y = int(np.rint(cy + ori_points[k, 1] * s - offset))
        if y < 0 or y >= S.shape[0] - grad_size or x < 0 or x >= S.shape[1] - grad_size:
            continue
        gx, gy = _haar_xy(S, y, x, grad_size)
        gx *= ori_weights[k]
        gy *= ori_weights[k]
        b = int(np.rint(_degrees_0_360(gy, gx))) % 360
        prefix_x[b + 1] += gx
        prefix_y[b + 1] += gy
        count += 1
    if count == 0:
        return False, 0.0
    for b in range(360):
        prefix_x[b + 1] += prefix_x[b]
        prefix_y[b + 1] += prefix_y[b]
    reach = ORI_WIN // 2 - 1
    best_x = best_y = best_mod = 0.0
    for centre in range(0, 360, ORI_SEARCH_INC):
        sum_x = _circular_window_sum(prefix_x, centre - reach, centre + reach)
        sum_y = _circular_window_sum(prefix_y, centre - reach, centre + reach)
        mod = sum_x * sum_x + sum_y * sum_y
        if mod > best_mod:
            best_mod, best_x, best_y = mod, sum_x, sum_y
    return True, _degrees_0_360(-best_y, best_x)


@numba.njit(cache=True)
def _area_weights(n_in, n_out):
    """INTER_AREA weights: output o is the sum over m of ``weights[o, m] * src[first[o] + m]``.

    The weight is the overlap of source pixel [c, c+1) with the output cell's span of
    ``n_in / n_out`` source pixels, over that span (zero past the last source pixel).
    """
    scale = n_in / n_out
    k = int(math.ceil(scale)) + 1
    first = np.empty(n_out, np.int64)
    weights = np.zeros((n_out, k))
    for o in range(n_out):
        lo = o * scale
        hi = min(lo + scale, n_in)
        first[o] = min(int(math.floor(lo)), n_in - k)
        for m in range(k):
            c = first[o] + m
            overlap = min(hi, c + 1) - max(lo, c)
            if c < n_in and overlap > 0:
                weights[o, m] = overlap / scale
    return first, weights


@numba.njit(cache=True)
def _area_reduce(src, first, weights, out):
    """``out[o] = sum_m weights[o, m] * src[first[o] + m]`` (one axis of INTER_AREA)."""
    for o in range(out.shape[0]):
        start = np.uint64(first[o])
        v = 0.0
        for m in range(np.uint64(weights.shape[1])):
            v += weights[np.uint64(o), m] * src[start + m]
        out[o] = v


@numba.njit(cache=True)
def _line_inside(x0, y0, x1, y1, cols1, rows1):
    """Whether every bilinear sample on the segment has its 2x2 neighbourhood in the image."""
    lo = 1e-6
    return (lo <= min(x0, x1) and max(x0, x1) < cols1 - lo
            and lo <= min(y0, y1) and max(y0, y1) < rows1 - lo)


@numba.njit(cache=True)
def _rotated_line(img, flat, px, py, dx, dy, line):
    """Samples px + j*dx, py + j*dy (j < len(line)) rounded to integers, as OpenCV takes them.

    Bilinear where the 2x2 neighbourhood lies inside the image, else the nearest pixel
    clamped to the image. Unsigned flat indices keep the common all-inside case fast.
    """
    n = line.shape[0]
    rows1, cols1 = img.shape[0] - 1, img.shape[1] - 1
    width = np.uint64(img.shape[1])
    if _line_inside(px, py, px + (n - 1) * dx, py + (n - 1) * dy, cols1, rows1):
        for j in range(n):
            ix, iy = np.uint64(px), np.uint64(py)
            a, b = px - ix, py - iy
            p = iy * width + ix
            q = p + width
            one = np.uint64(1)
            line[j] = np.rint(flat[p] * (1 - a) * (1 - b) + flat[p + one] * a * (1 - b)
                              + flat[q] * (1 - a) * b + flat[q + one] * a * b)
            px += dx
            py += dy
        return
    for j in range(n):
        ix, iy = int(math.floor(px)), int(math.floor(py))
        if 0 <= ix < cols1 and 0 <= iy < rows1:
            a, b = px - ix, py - iy
            line[j] = np.rint(img[iy, ix] * (1 - a) * (1 - b) + img[iy, ix + 1] * a * (1 - b)
                              + img[iy + 1, ix] * (1 - a) * b + img[iy + 1, ix + 1] * a * b)
        else:
            line[j] = img[min(max(int(np.rint(py)), 0), rows1),
                          min(max(int(np.rint(px)), 0), cols1)]
        px += dx
        py += dy


@numba.njit(cache=True)
def _upright_line(img, x, y_start, line):
    """OpenCV's upright window row: column x (clamped), rows y_start, y_start - 1, ..."""
    rows1, cols1 = img.shape[0] - 1, img.shape[1] - 1
    x = min(max(x, 0), cols1)
    for j in range(line.shape[0]):
        line[j] = img[min(max(y_start - j, 0), rows1), x]


@numba.njit(cache=True)
def _window_patch(img, cx, cy, angle, upright, n_win):
    """OpenCV's ``n_win``-pixel window, INTER_AREA-resized to 21x21 and rounded (its PATCH).

    Row i of a rotated window starts at ``start + i*(sin_dir, cos_dir)`` and steps by
    ``(cos_dir, -sin_dir)``, exactly as OpenCV walks it; upright windows take nearest
    pixels in OpenCV's fixed frame. Each row is sampled and reduced to 21 columns at once,
    so the window itself is never stored.
    """
    n_out = PATCH_SZ + 1
    first, weights = _area_weights(n_win, n_out)
    flat = img.reshape(-1)
    off = -(n_win - 1) / 2
    rad = math.radians(angle)
    sin_dir, cos_dir = -math.sin(rad), math.cos(rad)
    start_x = cx + off * cos_dir + off * sin_dir
    start_y = cy - off * sin_dir + off * cos_dir
    line = np.empty(n_win)
    reduced = np.empty((n_win, n_out))
    for i in range(n_win):
        if upright:
            _upright_line(img, int(np.rint(cx + off)) + i, int(np.rint(cy - off)), line)
        else:
            _rotated_line(img, flat, start_x + i * sin_dir, start_y + i * cos_dir,
                          cos_dir, -sin_dir, line)
        _area_reduce(line, first, weights, reduced[i])
    patch = np.zeros((n_out, n_out))
    for o in range(n_out):
        for m in range(weights.shape[1]):
            w = weights[o, m]
            for c in range(n_out):
                patch[o, c] += w * reduced[first[o] + m, c]
    for o in range(n_out):
        for c in range(n_out):
            patch[o, c] = np.rint(patch[o, c])
    return patch


@numba.njit(cache=True)
def _fill_descriptor(patch, desc_weights, extended, vec):
    """Gaussian-weighted 2x2 gradients of the 21x21 patch summed over 4x4 subregions."""
    acc = np.zeros(vec.shape[0])
    for i in range(PATCH_SZ):
        for j in range(PATCH_SZ):
            w = desc_weights[i, j]
            dx = (patch[i, j + 1] - patch[i, j] + patch[i + 1, j + 1] - patch[i + 1, j]) * w
            dy = (patch[i + 1, j] - patch[i, j] + patch[i + 1, j + 1] - patch[i, j + 1]) * w
            cell = (i // 5) * 4 + j // 5
            if extended:
                base = cell * 8 + (0 if dy >= 0 else 2)
                acc[base] += dx
                acc[base + 1] += abs(dx)
                base = cell * 8 + (4 if dx >= 0 else 6)
                acc[base] += dy
                acc[base + 1] += abs(dy)
            else:
                acc[cell * 4] += dx
                acc[cell * 4 + 1] += dy
                acc[cell * 4 + 2] += abs(dx)
                acc[cell * 4 + 3] += abs(dy)
    square_mag = 0.0
    for m in range(acc.shape[0]):
        square_mag += acc[m] * acc[m]
    scale = 1.0 / (math.sqrt(square_mag) + FLT_EPSILON)
    for m in range(vec.shape[0]):
        vec[m] = acc[m] * scale


@numba.njit(cache=True, nogil=True)
def _describe_some(img, S, points, first, stride, upright, extended, ori_points, ori_weights,
                   desc_weights, angles, keep, desc):
    """Fill rows ``first::stride`` of ``angles``, ``keep`` and ``desc`` for keypoints
    ``points[:, :3]`` (x, y, size); runs without the GIL."""
    for k in range(first, points.shape[0], stride):
        cx, cy = points[k, 0], points[k, 1]
        s = np.float32(points[k, 2]) * np.float32(1.2) / np.float32(9.0)
        grad_size = 2 * int(np.rint(2 * s))
        if grad_size < 2 or grad_size > S.shape[0] or grad_size > S.shape[1]:
            continue
        angle = UPRIGHT_ANGLE
        if not upright:
            ok, angle = _orientation(S, cx, cy, s, grad_size, ori_points, ori_weights)
            if not ok:
                continue
        n_win = int(np.float32(PATCH_SZ + 1) * s)
        patch = _window_patch(img, cx, cy, angle, upright, n_win)
        _fill_descriptor(patch, desc_weights, extended, desc[k])
        angles[k] = angle
        keep[k] = True


def _describe(img: np.ndarray, S: np.ndarray, points: np.ndarray, upright: bool,
              extended: bool, pool: ThreadPoolExecutor | None):
    """Angles, kept mask and descriptors of ``points``, interleaved over the pool's threads.

    The descriptor windows read intensities as float32: the same values, sampled faster.
    """
    n = len(points)
    angles = np.zeros(n)
    keep = np.zeros(n, np.bool_)
    desc = np.zeros((n, 128 if extended else 64), np.float32)
    img = img.astype(np.float32)
    stride = _TASKS_PER_THREAD * _n_threads()
    _run(pool, _describe_some, [(img, S, points, first, stride, upright, extended, _ORI_POINTS,
                                 _ORI_WEIGHTS, _DESC_WEIGHTS, angles, keep, desc)
                                for first in range(min(stride, n))])
    return angles, keep, desc


# ----------------------------------------------------------------------------- public API


def _n_threads() -> int:
    """Threads to use: ``NUMBA_NUM_THREADS`` (default: the number of CPUs)."""
    return max(1, numba.config.NUMBA_NUM_THREADS)


@contextlib.contextmanager
def _thread_pool():
    """A pool of :func:`_n_threads` threads (None when that is 1).

    Plain threads running the GIL-free kernels, rather than numba's ``parallel=True``:
    OpenMP-style workers spin and collapse on a busy machine, and would share (and fight
    over) the OpenMP runtime with torch in the same process.
    """
    n_threads = _n_threads()
    if n_threads == 1:
        yield None
        return
    with ThreadPoolExecutor(n_threads) as pool:
        yield pool


def _run(pool: ThreadPoolExecutor | None, kernel, arg_lists) -> list:
    """``[kernel(*args) for args in arg_lists]``, on the pool if there is one."""
    if pool is None:
        return [kernel(*args) for args in arg_lists]
    return [future.result() for future in [pool.submit(kernel, *args) for args in arg_lists]]


def _as_gray_uint8(image: np.ndarray) -> np.ndarray:
    """The contiguous uint8 grey image to work on; RGB(A) is converted, other dtypes refused."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise TypeError(f"SURF expects a uint8 image (0..255), got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    elif image.ndim == 3 and image.shape[2] in (3, 4):
        code = cv2.COLOR_RGB2GRAY if image.shape[2] == 3 else cv2.COLOR_RGBA2GRAY
        image = cv2.cvtColor(image, code)
    if image.ndim != 2:
        raise ValueError(f"SURF expects a 2-D grey image, got shape {image.shape}")
    return np.ascontiguousarray(image)


def _integral(img: np.ndarray) -> np.ndarray:
    """The integral image, int32 as in OpenCV while it cannot overflow, else float64.

    (OpenCV relies on int32 wrap-around there; the kernels here widen to 64 bits instead.)
    """
    exact_in_int32 = img.size * 255 < 2**31
    return cv2.integral(img, sdepth=cv2.CV_32S if exact_in_int32 else cv2.CV_64F)


def _given_keypoints(keypoints) -> np.ndarray:
    """[M, 7] rows from [M, 3+] x, y, size; response, octave, laplacian kept if given, else 0."""
    given = np.asarray(keypoints, dtype=np.float64)
    if given.ndim != 2 or given.shape[1] < 3:
        raise ValueError(f"keypoints must be [M, 3+] (x, y, size), got shape {given.shape}")
    if not np.isfinite(given[:, :3]).all():
        raise ValueError("keypoints must have finite x, y and size")
    kps = np.zeros((given.shape[0], 7))
    kps[:, :3] = given[:, :3]
    if given.shape[1] >= 7:
        kps[:, 4:7] = given[:, 4:7]
    return kps


def detect_and_compute(gray_uint8: np.ndarray, hessian_threshold: float = 400.0,
                       n_octaves: int = 4, n_octave_layers: int = 3, extended: bool = False,
                       upright: bool = False, keypoints=None) -> tuple[np.ndarray, np.ndarray]:
    """Detect SURF keypoints (or take ``keypoints``) and describe them.

    Args:
        gray_uint8: ``uint8`` grey image ``[H, W]``, intensities 0..255 (``[H, W, 3|4]`` RGB(A)
            is converted to grey first).
        hessian_threshold: minimum determinant of the Hessian, on OpenCV's scale.
        n_octaves, n_octave_layers: scale-space extent, as in ``cv2.xfeatures2d.SURF_create``.
        extended: 128-d instead of 64-d descriptors.
        upright: skip orientation (angle is then OpenCV's fixed 270).
        keypoints: optional ``[M, 3+]`` array of x, y, size to describe instead of detecting
            (e.g. from :func:`dense_keypoints`). Their orientation is computed unless upright;
            columns 4..6 (response, octave, laplacian) are carried over when present, else 0.
            Points that OpenCV would drop (see the module docstring) and points with
            ``size < 2`` are dropped; only kept rows are returned, in input order.

    Returns:
        ``kps`` float64 ``[N, 7]`` (x, y, size, angle, response, octave, laplacian) and
        ``desc`` float32 ``[N, 64 or 128]``, rows of unit length.
    """
    if n_octaves < 1 or n_octave_layers < 1 or hessian_threshold < 0:
        raise ValueError("need n_octaves >= 1, n_octave_layers >= 1, hessian_threshold >= 0")
    img = _as_gray_uint8(gray_uint8)
    S = _integral(img)
    with _thread_pool() as pool:
        if keypoints is None:
            kps = _fast_hessian(S, n_octaves, n_octave_layers, float(hessian_threshold), pool)
        else:
            kps = _given_keypoints(keypoints)
        angles, keep, desc = _describe(img, S, kps, bool(upright), bool(extended), pool)
    kps[:, 3] = angles
    return kps[keep], desc[keep]


def dense_keypoints(shape, step: int, sizes) -> np.ndarray:
    """Grid keypoints ``[M, 3]`` (x, y, size) for dense SURF on an image of ``shape``.

    Points lie every ``step`` pixels starting at ``step // 2`` in x and y; each grid point is
    repeated for every size in ``sizes`` (a number or a sequence). Rows are ordered by size,
    then y, then x.
    """
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    h, w = shape[:2]
    ys, xs = np.meshgrid(np.arange(step // 2, h, step), np.arange(step // 2, w, step),
                         indexing="ij")
    grid = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)
    sizes = np.atleast_1d(np.asarray(sizes, dtype=np.float64))
    return np.concatenate([np.column_stack([grid, np.full(len(grid), size)]) for size in sizes])
