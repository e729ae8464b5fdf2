"""Feature samples for the 2-D embedding figure (DeCAF's Figure 1: t-SNE of features by class).

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

A report draws only what the run wrote: it never re-creates extractors or reads the feature
cache (a run folder without ``features-sample/`` gets no embedding figure, and says why).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from featbench.atomic import atomic_write_bytes, atomic_write_text, npy_bytes
from .tables import strip_layers

SAMPLE_DIR = "features-sample"
MAX_POINTS = 500
MAX_DIM = 64


def _l2(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def reduce_features(X: np.ndarray, dim: int = MAX_DIM, seed: int = 0) -> np.ndarray:
    """L2-normalise rows, then PCA to at most ``dim`` dimensions (float32)."""
    from sklearn.decomposition import PCA

    X = _l2(X)
    k = min(dim, X.shape[1], max(1, len(X) - 1))
    return PCA(n_components=k, random_state=seed).fit_transform(X).astype(np.float32)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:60]


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
    keep = np.arange(n)
    if n > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))
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
        atomic_write_bytes(out / name, npy_bytes(X))
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
            X = _Preprocessed(X)
        feats.append((item["extractor"], item.get("layer", ""), item.get("extractor_family", ""), X))
    return {"task": meta.get("task", "?"), "split": meta.get("split", "test"), "classes": meta["classes"],
            "labels": labels, "uids": meta.get("uids"), "features": feats, "source": f"{SAMPLE_DIR}/ in the run folder"}


def merge_samples(samples: list[dict[str, Any]]) -> dict[str, Any] | None:
    """One sample from several runs' samples of the same images (same task, classes, labels, uids).

    Among the groups of compatible samples, the one covering both extractor families (classical and
    CNN) wins, then the one with the most features; features are deduplicated on (spec, layer).
    """
    groups: dict[tuple, dict[str, Any]] = {}
    for smp in samples:
        key = (smp["task"], tuple(smp["classes"]), tuple(np.asarray(smp["labels"]).tolist()),
               tuple(smp.get("uids") or ()))
        g = groups.setdefault(key, dict(smp, features=[], sources=[], skipped=[]))
        seen = {(strip_layers(f[0]), f[1]) for f in g["features"]}
        for f in smp["features"]:
            if (strip_layers(f[0]), f[1]) not in seen:
                g["features"].append(f)
                seen.add((strip_layers(f[0]), f[1]))
        g["sources"].append(smp.get("source", "?"))
        g["skipped"] += smp.get("skipped") or []
    if not groups:
        return None

    def rank(g):
        fams = {f[2] == "cnn" for f in g["features"]}
        return (len(fams), len(g["features"]))

    best = max(groups.values(), key=rank)
    best["source"] = " and ".join(dict.fromkeys(best["sources"]))
    found = {(strip_layers(f[0]), f[1]) for f in best["features"]}
    best["skipped"] = [s for s in dict.fromkeys(best["skipped"])
                       if not any(s.startswith(spec) for spec, _ in found)]
    return best


class _Preprocessed(np.ndarray):
    """Marks a sample that is already L2-normalised and PCA-reduced (see the module docstring)."""

    def __new__(cls, X: np.ndarray) -> "_Preprocessed":
        return np.asarray(X).view(cls)


def tsne_2d(X: np.ndarray, seed: int = 0) -> np.ndarray:
    """L2-normalise rows, PCA to at most 50 dimensions, then t-SNE to 2-D (scikit-learn)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    done = isinstance(X, _Preprocessed)
    X = np.asarray(X, dtype=np.float64)
    if not done:
        X = _l2(X)
    n = len(X)
    if X.shape[1] > 50 and n > 2:
        X = PCA(n_components=min(50, n - 1, X.shape[1]), random_state=seed).fit_transform(X)
    perplexity = float(max(2.0, min(30.0, (n - 1) / 3.0)))
    from threadpoolctl import threadpool_limits

    # one thread: on a busy 2-core machine OpenMP oversubscription made t-SNE of 45 points take 27 s, not 0.3 s
    with threadpool_limits(limits=1):
        return TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed,
                    max_iter=500, n_jobs=1).fit_transform(X)


def choose_panels(features: list[tuple[str, str, str, np.ndarray]], score: dict[tuple[str, str], float],
                  limit: int = 4) -> list[tuple[str, str, str, np.ndarray]]:
    """Up to ``limit`` features, classical beside CNN as in DeCAF's Figure 1.

    Order of preference: best classical, best CNN layer, shallowest CNN layer, then the rest by
    accuracy (``score`` maps (spec, layer) to the headline accuracy on the task, when known).
    """
    def acc(f):
        return score.get((f[0], f[1]), float("-inf"))

    classical = sorted([f for f in features if f[2] != "cnn"], key=acc, reverse=True)
    cnn = [f for f in features if f[2] == "cnn"]
    picked: list = []
    if classical:
        picked.append(classical[0])
    if cnn:
        best = max(cnn, key=acc)
        picked.append(best)
        if cnn[0] is not best:
            picked.append(cnn[0])
    rest = sorted([f for f in features if all(f is not p for p in picked)], key=acc, reverse=True)
    picked += rest
    picked = picked[:limit]
    # classical first, then CNN layers in network order
    return [f for f in features if any(f is p for p in picked) and f[2] != "cnn"] + \
        [f for f in features if any(f is p for p in picked) and f[2] == "cnn"]
