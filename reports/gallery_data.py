"""What a run keeps for the report's galleries ("what each extractor sees", failures), pickle-free.

``featbench report`` draws the galleries from these files alone: it never re-runs extraction or
re-reads the dataset. Written by :class:`featbench.gallery.GalleryKeeper` during ``featbench run``::

    RUN_DIR/gallery/
        index.json                 {"format": 1, "tasks": {TASK: ENTRY}}
        00-<task>/images/00.jpg    the chosen test images (longer side <= 320 px, JPEG)
        00-<task>/sees-00-<ex>.npz what extractor 00 sees: arrays "<i>/<key>" for image i (from
                                   ``Extractor.visualise``) and "model/<key>" (``visualise_model``)
        00-<task>/probe-00-<ex>.npz  for a CNN: "W" [classes, d], "b" [classes] (the linear probe in
                                   raw-feature space, ``classifier.original_space_weights``) and
                                   "cam/<i>" float32 [classes, h, w]: ``W . A(x, y)`` over the
                                   deepest reported conv map ``A`` of image i (mean + b = the logits)
        00-<task>/thumbs/<uid16>.jpg  96 px thumbnails of trial-0 test images that some variant
                                   got wrong (at most ``THUMB_CAP`` per task, a seeded choice)

ENTRY: ``{"dir", "trial": 0, "split": "test", "seed", "classifier", "classes",
"images": [{"uid", "relpath", "label", "file", "width", "height"}],
"extractors": [{"extractor", "family", "file", "strings": [{...} per image], "errors": {i: why}}],
"probes": [{"extractor", "layer", "file"}], "thumbs": {uid: file}, "thumbs_left_out": n}``.

The test images are ``GALLERY_IMAGES`` at most, one or two per class (two when the task has at
most four classes), classes and images drawn with ``numpy.random.default_rng(seed)`` from trial 0's
test split. Which test image each variant got right is in ``predictions.jsonl`` (``uids`` and
``relpaths`` beside ``y_true`` / ``y_pred``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

GALLERY_DIR = "gallery"


def read_index(run_dir: Path) -> dict[str, Any] | None:
    """``gallery/index.json`` of a run folder, or None when the run kept no gallery (or another format)."""
    path = Path(run_dir) / GALLERY_DIR / "index.json"
    if not path.is_file():
        return None
    index = json.loads(path.read_text())
    return index if index.get("format") == 1 else None


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of a gallery ``.npz`` (no pickle)."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def per_image(arrays: dict[str, np.ndarray], i: int | str) -> dict[str, np.ndarray]:
    """The arrays of image ``i`` (or ``"model"``) from a ``sees-*.npz``, keys without the prefix."""
    prefix = f"{i}/"
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
