"""Seeded synthetic image folders of any size, for measuring scale (``featbench synth-data``).

Writes ``OUT/{train,test}/<class>/<n>.jpg`` plus ``OUT/MANIFEST.tsv`` (relpath, class, split,
bytes, sha256), the layout featbench reads, so a dataset of a million images is listed without
hashing it again. Each class is a colour-tinted sinusoidal grating at its own orientation and
frequency; every image jitters orientation, phase and tint and adds noise, so the classes are
learnable by gradient (HOG), local-descriptor and CNN features alike but not trivially.
Image ``i`` depends only on ``(seed, i)``: the same command writes the same bytes.
"""
from __future__ import annotations

import csv
import hashlib
import math
import os
from pathlib import Path

import numpy as np

from featbench.errors import FeatbenchError


def class_params(k: int, seed: int) -> list[tuple[float, float, np.ndarray]]:
    """(orientation, frequency in cycles per image, RGB tint) of each class."""
    rng = np.random.default_rng([seed, 1 << 20])
    return [(math.pi * c / k, 2.0 + 6.0 * rng.random(), rng.uniform(0.3, 1.0, 3)) for c in range(k)]


def render(i: int, label: int, size: int, params, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, i])
    theta, freq, tint = params[label]
    theta += rng.normal(0, 0.12)
    yy, xx = np.mgrid[0:size, 0:size] / size
    wave = np.sin(2 * math.pi * freq * (xx * math.cos(theta) + yy * math.sin(theta)) + rng.uniform(0, 2 * math.pi))
    colour = np.clip(tint + rng.normal(0, 0.08, 3), 0, 1)
    img = 0.5 + 0.35 * wave[..., None] * colour + rng.normal(0, 0.08, (size, size, 3))
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def write_synthetic_dataset(out: str | os.PathLike, images: int, classes: int, size: int = 64, seed: int = 0,
                            train_fraction: float = 0.75, quality: int = 90, progress=None) -> Path:
    """Write the folder; returns its path. ``images`` is the total over all classes."""
    import cv2

    out = Path(out)
    if images < 2 * classes or classes < 2:
        raise FeatbenchError(f"synth-data: need at least 2 classes and 2 images per class "
                             f"(asked {images} images in {classes} classes)")
    if size < 16:
        raise FeatbenchError(f"synth-data: --size {size} is too small (at least 16)")
    if out.exists() and any(out.iterdir()):
        raise FeatbenchError(f"synth-data: {out} exists and is not empty")
    params = class_params(classes, seed)
    names = [f"class{c:04d}" for c in range(classes)]
    per_class = [images // classes + (c < images % classes) for c in range(classes)]
    rows = []
    i = 0
    for c, n in enumerate(per_class):
        n_train = max(1, min(n - 1, round(n * train_fraction)))
        for j in range(n):
            split = "train" if j < n_train else "test"
            rel = f"{split}/{names[c]}/{j:07d}.jpg"
            ok, buf = cv2.imencode(".jpg", render(i, c, size, params, seed)[..., ::-1],
                                   [cv2.IMWRITE_JPEG_QUALITY, quality])
            data = buf.tobytes()
            path = out / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            rows.append((rel, names[c], split, len(data), hashlib.sha256(data).hexdigest()))
            i += 1
            if progress is not None:
                progress(1)
    with open(out / "MANIFEST.tsv", "w", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
        writer.writerow(["relpath", "class", "split", "bytes", "sha256"])
        writer.writerows(rows)
    return out
