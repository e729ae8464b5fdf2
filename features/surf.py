"""SURF keypoints and descriptors (Bay et al. 2008), following OpenCV's ``surf.cpp``.

Every pip build of OpenCV leaves SURF out (``cv2.xfeatures2d.SURF_create`` raises), so
featbench carries its own. It follows OpenCV's implementation
(``opencv_contrib/modules/xfeatures2d/src/surf.cpp``) step by step, so parameters mean
what they mean there, and depends on numpy, numba and cv2 only.

Input is a ``uint8`` grey image with intensities 0..255 (an RGB or RGBA ``uint8`` image is
converted with ``cv2.cvtColor``). :func:`detect_and_compute` returns

* ``kps``: float64 ``[N, 7]``, columns ``x, y, size, angle, response, octave, laplacian``;
* ``desc``: float32 ``[N, 64]`` (``[N, 128]`` when ``extended``), each row of unit length.

Conventions kept from OpenCV
----------------------------
* Integral image of the 0..255 intensities (``cv2.integral``, int32).
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
  slides in 5-degree steps and the longest summed vector gives
  ``angle = atan2(-sum_y, sum_x)`` in degrees, 0..360 -- OpenCV's SURF convention, which
  is the opposite sense of rotation to OpenCV's SIFT angles.
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
* No mask argument and no OpenCL path; parallelism comes from numba's ``prange``.
"""
from __future__ import annotations

import math

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
KEYPOINT_COLUMNS = ("x", "y", "size", "angle", "response", "octave", "laplacian")

# Box lobes of the 9x9 filters: x1, y1, x2, y2 (exclusive), weight before area normalisation.
_DXX_9 = np.array([[0, 2, 3, 7, 1], [3, 2, 6, 7, -2], [6, 2, 9, 7, 1]])
_DYY_9 = np.array([[2, 0, 7, 3, 1], [2, 3, 7, 6, -2], [2, 6, 7, 9, 1]])
_DXY_9 = np.array([[1, 1, 4, 4, 1], [5, 1, 8, 4, -1], [1, 5, 4, 8, -1], [5, 5, 8, 8, 1]])


def _resize_pattern(pattern: np.ndarray, new_size: int) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's ``resizeHaarPattern`` for a 9x9 pattern: rounded corners and ±1/area weights."""
    ratio = np.float32(new_size) / np.float32(HAAR_SIZE0)
    corners = np.rint(ratio * pattern[:, :4].astype(np.float32)).astype(np.int64)
    area = (corners[:, 2] - corners[:, 0]) * (corners[:, 3] - corners[:, 1])
    return corners, pattern[:, 4] / area


def _octave_patterns(sizes: np.ndarray) -> tuple[np.ndarray, ...]:
    """Resized Dxx, Dyy, Dxy lobes (corners ``[L, n, 4]``, weights ``[L, n]``) per layer."""
    out = []
    for pattern in (_DXX_9, _DYY_9, _DXY_9):
        resized = [_resize_pattern(pattern, int(size)) for size in sizes]
        out.append(np.stack([c for c, _ in resized]))
        out.append(np.stack([w for _, w in resized]))
    return tuple(out)


def _gaussian(n: int, sigma: float) -> np.ndarray:
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
def _box_filter(S, y, x, corners, weights, layer):
    """Sum of area-normalised box lobes whose top-left corner is at (y, x) of integral S."""
    d = 0.0
    for k in range(corners.shape[1]):
        x1 = x + corners[layer, k, 0]
        y1 = y + corners[layer, k, 1]
        x2 = x + corners[layer, k, 2]
        y2 = y + corners[layer, k, 3]
        d += (S[y1, x1] + S[y2, x2] - S[y2, x1] - S[y1, x2]) * weights[layer, k]
    return d


@numba.njit(cache=True, parallel=True)
def _hessian_octave(S, sizes, step, cxx, wxx, cyy, wyy, cxy, wxy, det, trace):
    """Fill ``det`` and ``trace`` ``[L, H//step, W//step]`` for one octave (calcLayerDetAndTrace).

    Entry ``[l, i, j]`` holds the filter whose centre is nearest sample (i, j); entries whose
    filter would leave the image stay zero.
    """
    img_h = S.shape[0] - 1
    img_w = S.shape[1] - 1
    for i in numba.prange(det.shape[1]):
        for layer in range(sizes.shape[0]):
            size = sizes[layer]
            if size > img_h or size > img_w:
                continue
            margin = (size // 2) // step
            row = i - margin
            if row < 0 or row > (img_h - size) // step:
                continue
            y = row * step
            for col in range((img_w - size) // step + 1):
                x = col * step
                dxx = _box_filter(S, y, x, cxx, wxx, layer)
                dyy = _box_filter(S, y, x, cyy, wyy, layer)
                dxy = _box_filter(S, y, x, cxy, wxy, layer)
                det[layer, i, col + margin] = dxx * dyy - 0.81 * dxy * dxy
                trace[layer, i, col + margin] = dxx + dyy


@numba.njit(cache=True)
def _is_local_max(det, layer, i, j):
    v = det[layer, i, j]
    for dl in range(-1, 2):
        for di in range(-1, 2):
            for dj in range(-1, 2):
                if (dl != 0 or di != 0 or dj != 0) and det[layer + dl, i + di, j + dj] >= v:
                    return False
    return True


@numba.njit(cache=True)
def _det3(m):
    return (m[0, 0] * (m[1, 1] * m[2, 2] - m[1, 2] * m[2, 1])
            - m[0, 1] * (m[1, 0] * m[2, 2] - m[1, 2] * m[2, 0])
            + m[0, 2] * (m[1, 0] * m[2, 1] - m[1, 1] * m[2, 0]))


@numba.njit(cache=True)
def _solve3(a, b):
    """Solve the 3x3 system a @ x = b by Cramer's rule; ``ok`` is False when singular."""
    x = np.zeros(3)
    d = _det3(a)
    if d == 0.0:
        return False, x
    for c in range(3):
        m = a.copy()
        m[:, c] = b
        x[c] = _det3(m) / d
    return True, x


@numba.njit(cache=True)
def _interpolate(n):
    """OpenCV's interpolateKeypoint on the 3x3x3 block ``n[layer, y, x]``.

    Returns (ok, offset) with offset (dx, dy, ds) in samples; ok is False when the system is
    singular, the offset is zero or any component exceeds one sample.
    """
    b = np.empty(3)
    b[0] = -(n[1, 1, 2] - n[1, 1, 0]) / 2
    b[1] = -(n[1, 2, 1] - n[1, 0, 1]) / 2
    b[2] = -(n[2, 1, 1] - n[0, 1, 1]) / 2
    a = np.empty((3, 3))
    a[0, 0] = n[1, 1, 0] - 2 * n[1, 1, 1] + n[1, 1, 2]
    a[1, 1] = n[1, 0, 1] - 2 * n[1, 1, 1] + n[1, 2, 1]
    a[2, 2] = n[0, 1, 1] - 2 * n[1, 1, 1] + n[2, 1, 1]
    a[0, 1] = a[1, 0] = (n[1, 2, 2] - n[1, 2, 0] - n[1, 0, 2] + n[1, 0, 0]) / 4
    a[0, 2] = a[2, 0] = (n[2, 1, 2] - n[2, 1, 0] - n[0, 1, 2] + n[0, 1, 0]) / 4
    a[1, 2] = a[2, 1] = (n[2, 2, 1] - n[2, 0, 1] - n[0, 2, 1] + n[0, 0, 1]) / 4
    solved, x = _solve3(a, b)
    ok = solved and (x[0] != 0 or x[1] != 0 or x[2] != 0)
    ok = ok and abs(x[0]) <= 1 and abs(x[1]) <= 1 and abs(x[2]) <= 1
    return ok, x


@numba.njit(cache=True)
def _octave_maxima(det, trace, sizes, step, octave, threshold):
    """Keypoints ``[n, 7]`` (angle 0 for now) of the middle layers of one octave."""
    found = []
    rows, cols = det.shape[1], det.shape[2]
    for layer in range(1, sizes.shape[0] - 1):
        size = sizes[layer]
        margin = (sizes[layer + 1] // 2) // step + 1
        half = (size // 2) // step
        for i in range(margin, rows - margin):
            for j in range(margin, cols - margin):
                response = det[layer, i, j]
                if response <= threshold or not _is_local_max(det, layer, i, j):
                    continue
                ok, off = _interpolate(det[layer - 1:layer + 2, i - 1:i + 2, j - 1:j + 2])
                if not ok:
                    continue
                cy = step * (i - half) + (size - 1) * 0.5
                cx = step * (j - half) + (size - 1) * 0.5
                new_size = np.rint(size + off[2] * (size - sizes[layer - 1]))
                lap = np.float64(np.sign(trace[layer, i, j]))
                found.append((cx + off[0] * step, cy + off[1] * step, new_size, 0.0,
                               np.float64(response), np.float64(octave), lap))
    out = np.empty((len(found), 7))
    for k in range(len(found)):
        for m in range(7):
            out[k, m] = found[k][m]
    return out


def _layer_sizes(octave: int, n_octave_layers: int) -> np.ndarray:
    return np.array([(HAAR_SIZE0 + HAAR_SIZE_INC * layer) << octave
                     for layer in range(n_octave_layers + 2)], dtype=np.int64)


def _fast_hessian(S: np.ndarray, n_octaves: int, n_octave_layers: int,
                  threshold: float) -> np.ndarray:
    """OpenCV's fastHessianDetector: keypoints ``[N, 7]`` sorted like KeypointGreater."""
    img_h, img_w = S.shape[0] - 1, S.shape[1] - 1
    found = [np.empty((0, 7))]
    for octave in range(n_octaves):
        step = 1 << octave
        shape = (n_octave_layers + 2, img_h // step, img_w // step)
        sizes = _layer_sizes(octave, n_octave_layers)
        det = np.zeros(shape, np.float32)
        trace = np.zeros(shape, np.float32)
        _hessian_octave(S, sizes, step, *_octave_patterns(sizes), det, trace)
        found.append(_octave_maxima(det, trace, sizes, step, octave, threshold))
    kps = np.concatenate(found)
    x, y, size, _, response, octave, _ = kps.T
    return kps[np.lexsort((x, -y, -octave, -size, -response))]


# ------------------------------------------------------------------ orientation, descriptor


@numba.njit(cache=True)
def _rect_sum(S, y1, x1, y2, x2):
    return S[y1, x1] + S[y2, x2] - S[y2, x1] - S[y1, x2]


@numba.njit(cache=True)
def _degrees_0_360(y, x):
    a = math.degrees(math.atan2(y, x))
    if a < 0:
        a += 360.0
    return 0.0 if a >= 360.0 else a + 0.0


@numba.njit(cache=True)
def _orientation(S, cx, cy, s, grad_size, ori_points, ori_weights):
    """Dominant direction in degrees (OpenCV SURF convention); ok False if no sample fits."""
    n = ori_points.shape[0]
    gx = np.empty(n)
    gy = np.empty(n)
    bins = np.empty(n, np.int64)
    half = grad_size // 2
    norm = 1.0 / (half * grad_size)
    offset = (grad_size - 1) / 2
    count = 0
    for k in range(n):
        x = int(np.rint(cx + ori_points[k, 0] * s - offset))
        y = int(np.rint(cy + ori_points[k, 1] * s - offset))
        if y < 0 or y >= S.shape[0] - grad_size or x < 0 or x >= S.shape[1] - grad_size:
            continue
        right_minus_left = (_rect_sum(S, y, x + half, y + grad_size, x + grad_size)
                            - _rect_sum(S, y, x, y + grad_size, x + half))
        top_minus_bottom = (_rect_sum(S, y, x, y + half, x + grad_size)
                            - _rect_sum(S, y + half, x, y + grad_size, x + grad_size))
        gx[count] = right_minus_left * norm * ori_weights[k]
        gy[count] = top_minus_bottom * norm * ori_weights[k]
        bins[count] = int(np.rint(_degrees_0_360(gy[count], gx[count])))
        count += 1
    if count == 0:
        return False, 0.0
    best_x = best_y = best_mod = 0.0
    for start in range(0, 360, ORI_SEARCH_INC):
        sum_x = sum_y = 0.0
        for k in range(count):
            d = abs(bins[k] - start)
            if d < ORI_WIN // 2 or d > 360 - ORI_WIN // 2:
                sum_x += gx[k]
                sum_y += gy[k]
        mod = sum_x * sum_x + sum_y * sum_y
        if mod > best_mod:
            best_mod, best_x, best_y = mod, sum_x, sum_y
    return True, _degrees_0_360(-best_y, best_x)


@numba.njit(cache=True)
def _sample_rotated(img, cx, cy, angle, win):
    """The window around (cx, cy) rotated by ``angle`` degrees, bilinear inside the image."""
    n = win.shape[0]
    rad = math.radians(angle)
    sin_dir = -math.sin(rad)
    cos_dir = math.cos(rad)
    off = -(n - 1) / 2
    start_x = cx + off * cos_dir + off * sin_dir
    start_y = cy - off * sin_dir + off * cos_dir
    rows1, cols1 = img.shape[0] - 1, img.shape[1] - 1
    for i in range(n):
        for j in range(n):
            px = start_x + i * sin_dir + j * cos_dir
            py = start_y + i * cos_dir - j * sin_dir
            ix, iy = int(math.floor(px)), int(math.floor(py))
            if 0 <= ix < cols1 and 0 <= iy < rows1:
                a, b = px - ix, py - iy
                v = (img[iy, ix] * (1 - a) * (1 - b) + img[iy, ix + 1] * a * (1 - b)
                     + img[iy + 1, ix] * (1 - a) * b + img[iy + 1, ix + 1] * a * b)
                win[i, j] = np.uint8(np.rint(v))
            else:
                x = min(max(int(np.rint(px)), 0), cols1)
                y = min(max(int(np.rint(py)), 0), rows1)
                win[i, j] = img[y, x]


@numba.njit(cache=True)
def _sample_upright(img, cx, cy, win):
    """OpenCV's upright window: nearest pixels, clamped, in the fixed 270-degree frame."""
    n = win.shape[0]
    off = -(n - 1) / 2
    start_x = int(np.rint(cx + off))
    start_y = int(np.rint(cy - off))
    rows1, cols1 = img.shape[0] - 1, img.shape[1] - 1
    for i in range(n):
        x = min(max(start_x + i, 0), cols1)
        for j in range(n):
            win[i, j] = img[min(max(start_y - j, 0), rows1), x]


@numba.njit(cache=True)
def _area_weights(n_in, n_out):
    """Per output cell: first source index and coverage weights (rows of ``[n_out, k]``)."""
    scale = n_in / n_out
    k = int(math.ceil(scale)) + 1
    first = np.empty(n_out, np.int64)
    weights = np.zeros((n_out, k))
    for o in range(n_out):
        lo = o * scale
        hi = min(lo + scale, n_in)
        first[o] = int(math.floor(lo))
        for m in range(k):
            src = first[o] + m
            if src >= n_in:
                break
            overlap = min(hi, src + 1) - max(lo, src)
            if overlap > 0:
                weights[o, m] = overlap / scale
    return first, weights


@numba.njit(cache=True)
def _area_resize(win, n_out):
    """``cv2.resize(win, (n_out, n_out), interpolation=INTER_AREA)``, rounded to integers."""
    n_in = win.shape[0]
    first, weights = _area_weights(n_in, n_out)
    k = weights.shape[1]
    rows = np.zeros((n_out, n_in))
    for o in range(n_out):
        for m in range(k):
            w = weights[o, m]
            if w != 0.0:
                for c in range(n_in):
                    rows[o, c] += w * win[first[o] + m, c]
    patch = np.zeros((n_out, n_out))
    for r in range(n_out):
        for o in range(n_out):
            v = 0.0
            for m in range(k):
                if weights[o, m] != 0.0:
                    v += weights[o, m] * rows[r, first[o] + m]
            patch[r, o] = np.rint(v)
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
    scale = 1.0 / (math.sqrt(np.sum(acc * acc)) + FLT_EPSILON)
    for m in range(vec.shape[0]):
        vec[m] = acc[m] * scale


@numba.njit(cache=True, parallel=True)
def _describe(img, S, points, upright, extended, ori_points, ori_weights, desc_weights):
    """Angles, kept mask and descriptors for keypoints ``points[:, :3]`` (x, y, size)."""
    n = points.shape[0]
    desc = np.zeros((n, 128 if extended else 64), np.float32)
    angles = np.zeros(n)
    keep = np.zeros(n, np.bool_)
    for k in numba.prange(n):
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
        win = np.empty((n_win, n_win), np.uint8)
        if upright:
            _sample_upright(img, cx, cy, win)
        else:
            _sample_rotated(img, cx, cy, angle, win)
        _fill_descriptor(_area_resize(win, PATCH_SZ + 1), desc_weights, extended, desc[k])
        angles[k] = angle
        keep[k] = True
    return angles, keep, desc


# ----------------------------------------------------------------------------- public API


def _as_gray_uint8(image: np.ndarray) -> np.ndarray:
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


def _given_keypoints(keypoints) -> np.ndarray:
    """[M, 7] rows from [M, 3+] x, y, size; response, octave, laplacian kept if given, else 0."""
    given = np.asarray(keypoints, dtype=np.float64)
    if given.ndim != 2 or given.shape[1] < 3:
        raise ValueError(f"keypoints must be [M, 3+] (x, y, size), got shape {given.shape}")
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
    S = cv2.integral(img, sdepth=cv2.CV_32S)
    if keypoints is None:
        kps = _fast_hessian(S, n_octaves, n_octave_layers, float(hessian_threshold))
    else:
        kps = _given_keypoints(keypoints)
    angles, keep, desc = _describe(img, S, kps, bool(upright), bool(extended),
                                   _ORI_POINTS, _ORI_WEIGHTS, _DESC_WEIGHTS)
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
