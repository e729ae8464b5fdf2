"""The image set ``featbench speed`` times on: real photos, file-backed so reading and decoding are real.

``office_caltech10`` under the data roots when present, else another shared dataset, else 16
photos shipped as files inside scikit-image (:func:`speed_images`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from featbench.datasets.folder import ImageRecord, read_dataset, sha256_file
from featbench.errors import FeatbenchError

#: Datasets looked for under the data roots, in order; the first one found is used.
PREFERRED_DATASETS = ("office_caltech10", "caltech101_mini", "cub200_mini", "scene15_mini")
#: Real photos shipped as files inside scikit-image (the fallback image set).
SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
                  "hubble_deep_field.jpg", "retina.jpg", "ihc.png", "camera.png", "brick.png", "grass.png",
                  "gravel.png", "coins.png", "moon.png", "cell.png", "clock_motion.png")


def _spread(n_total: int, n: int) -> list[int]:
    """``n`` indices spread evenly over ``range(n_total)`` (deterministic)."""
    if n >= n_total:
        return list(range(n_total))
    return sorted({int(round(i)) for i in np.linspace(0, n_total - 1, n)})


def skimage_photo_records() -> list[ImageRecord]:
    """The scikit-image photos as file-backed records (so reading and decoding are real)."""
    import skimage

    folder = Path(skimage.__file__).resolve().parent / "data"
    out = []
    for name in SKIMAGE_PHOTOS:
        path = folder / name
        if path.is_file():
            out.append(ImageRecord(uid=sha256_file(path), label=path.stem, group="all", relpath=name, path=str(path)))
    if not out:
        raise FeatbenchError(f"no scikit-image photos found in {folder}")
    return out


def find_speed_dataset(data_roots: Sequence[str], dataset: str | None = None) -> tuple[str, list[ImageRecord]]:
    """Name and records of the image pool: ``dataset`` (a name under the roots, or a folder),
    else the first of :data:`PREFERRED_DATASETS` found, else the scikit-image photos."""
    if dataset == "skimage":
        return "skimage_photos", skimage_photo_records()
    if dataset:
        p = Path(dataset).expanduser()
        if p.is_dir():
            ds = read_dataset(p)
            return ds.name, sorted(ds.records, key=lambda r: r.relpath)
        candidates: Sequence[str] = (dataset,)
    else:
        candidates = PREFERRED_DATASETS
    for name in candidates:
        for root in data_roots:
            folder = Path(root).expanduser() / name
            if folder.is_dir():
                ds = read_dataset(folder, name)
                return ds.name, sorted(ds.records, key=lambda r: r.relpath)
    if dataset:
        searched = ", ".join(str(Path(r).expanduser()) for r in data_roots) or "(no data root)"
        raise FeatbenchError(f"dataset '{dataset}' not found under {searched} (use --data-root DIR)")
    return "skimage_photos", skimage_photo_records()


def speed_images(n: int, data_roots: Sequence[str] = (), dataset: str | None = None,
                 n_fit: int = 0) -> tuple[str, list[ImageRecord], list[ImageRecord]]:
    """``(dataset, timed, fit)``: ``n`` records spread over the sorted pool, plus up to ``n_fit``
    other records for fitting learned extractors (the timed ones again when the pool is small).
    When the pool has fewer than ``n`` images it is cycled (the same files read again)."""
    name, pool = find_speed_dataset(data_roots, dataset)
    if n <= len(pool):
        idx = _spread(len(pool), n)
        timed = [pool[i] for i in idx]
    else:
        timed = [pool[i % len(pool)] for i in range(n)]
        idx = list(range(len(pool)))
    rest = [pool[i] for i in range(len(pool)) if i not in set(idx)]
    fit = [rest[i] for i in _spread(len(rest), n_fit)] if len(rest) >= max(n_fit, 1) else list(timed[:max(n_fit, 1)])
    if n_fit and len(fit) < n_fit:
        fit = (fit * (n_fit // max(len(fit), 1) + 1))[:n_fit]
    return name, timed, fit
