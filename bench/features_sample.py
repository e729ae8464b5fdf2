"""The ``features-sample/`` a run writes: test features of one task for the report's 2-D embedding.

Written by the runner (the run writes what its report draws), read by
:mod:`featbench.reports.embedding`.

Run-folder format (no pickle anywhere), written by :func:`write_features_sample`::

    RUN_DIR/features-sample/
        sample.json   {"format": 1, "task": "caltech101_mini", "split": "test", "trial": 0,
                       "classes": ["airplanes", ...],          # class names, index = label
                       "labels": [0, 3, ...],                  # one per row of every .npy file
                       "uids": ["<sha256>", ...],              # optional, one per row
                       "features": [{"extractor": "hog", "layer": "", "extractor_family": "classical",
                                     "file": "00.npy"}, ...]}
        00-hog.npy, ...       float32 [n, d] (np.save, allow_pickle=False), row i <-> labels[i]

Features wider than ``MAX_DIM`` (64) are stored reduced: rows L2-normalised, then PCA to 64
dimensions fitted on the sample (``"preprocessed": "l2-pca64"`` in the item), which is what
the t-SNE does first anyway; this keeps a 32k-D Fisher vector's sample at 100 KB, not 50 MB.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from featbench.atomic import atomic_write_bytes, atomic_write_text, npy_bytes

SAMPLE_DIR = "features-sample"
MAX_POINTS = 500
MAX_DIM = 64


def l2_rows(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def reduce_features(X: np.ndarray, dim: int = MAX_DIM, seed: int = 0) -> np.ndarray:
    """L2-normalise rows, then PCA to at most ``dim`` dimensions (float32)."""
    from sklearn.decomposition import PCA

    X = l2_rows(X)
    k = min(dim, X.shape[1], max(1, len(X) - 1))
    return PCA(n_components=k, random_state=seed).fit_transform(X).astype(np.float32)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:60]


def sample_indices(n: int, max_points: int = MAX_POINTS, seed: int = 0) -> np.ndarray:
    """The rows a sample of ``n`` keeps: all of them, or a seeded draw of ``max_points`` in order.
    The runner draws them before reading any feature row, so that only these are read."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


def write_features_sample(run_dir: Path, task: str, classes: Sequence[str], labels: Sequence[int],
                          features: Sequence[tuple[str, str, str, np.ndarray]], *, split: str = "test",
                          trial: int = 0, uids: Sequence[str] | None = None, max_points: int = MAX_POINTS,
                          seed: int = 0) -> Path:
    """Write ``features`` (a list of (extractor spec, layer, extractor_family, X [n, d])) for one task.

    Rows beyond ``max_points`` are dropped by a seeded draw (the same rows for every feature).
    Returns the folder.
    """
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    keep = sample_indices(n, max_points, seed)
    out = Path(run_dir) / SAMPLE_DIR
    out.mkdir(parents=True, exist_ok=True)
    items = []
    for i, (spec, layer, family, X) in enumerate(features):
        X = np.asarray(X, dtype=np.float32)
        if len(X) != n:
            raise ValueError(f"features of {spec}@{layer}: {len(X)} rows for {n} labels")
        X = X[keep]
        item = {"extractor": spec, "layer": layer, "extractor_family": family, "dim": int(X.shape[1])}
        if X.shape[1] > MAX_DIM:
            X = reduce_features(X, MAX_DIM, seed)
            item["preprocessed"] = f"l2-pca{X.shape[1]}"
        name = f"{i:02d}-{_safe(spec)}{'-' + _safe(layer) if layer else ''}.npy"
        atomic_write_bytes(out / name, npy_bytes(X))  # a failed write leaves no truncated .npy
        items.append(dict(item, file=name))
    meta: dict[str, Any] = {"format": 1, "task": task, "split": split, "trial": trial, "classes": list(classes),
                            "labels": labels[keep].tolist(), "features": items}
    if uids is not None:
        meta["uids"] = [uids[i] for i in keep]
    atomic_write_text(out / "sample.json", json.dumps(meta, indent=1))  # last: its presence means the rest is whole
    return out


def read_features_sample(run_dir: Path) -> dict[str, Any] | None:
    """``{"task", "classes", "labels" (array), "features": [(spec, layer, family, X)]}`` or None."""
    folder = Path(run_dir) / SAMPLE_DIR
    meta_path = folder / "sample.json"
    if not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text())
    labels = np.asarray(meta["labels"], dtype=np.int64)
    feats = []
    for item in meta.get("features", []):
        X = np.load(folder / item["file"], allow_pickle=False)
        if len(X) != len(labels):
            raise ValueError(f"{folder / item['file']}: {len(X)} rows for {len(labels)} labels")
        if item.get("preprocessed"):
            X = np.asarray(X, dtype=np.float32)  # already L2-normalised and PCA-reduced: tsne_2d leaves it
            X = Preprocessed(X)
        feats.append((item["extractor"], item.get("layer", ""), item.get("extractor_family", ""), X))
    return {"task": meta.get("task", "?"), "split": meta.get("split", "test"), "classes": meta["classes"],
            "labels": labels, "uids": meta.get("uids"), "features": feats, "source": f"{SAMPLE_DIR}/ in the run folder"}


class Preprocessed(np.ndarray):
    """Marks a sample that is already L2-normalised and PCA-reduced (see the module docstring)."""

    def __new__(cls, X: np.ndarray) -> "Preprocessed":
        return np.asarray(X).view(cls)
