"""The report's 2-D embedding figure (DeCAF's Figure 1: t-SNE of features by class).

It draws the run folder's ``features-sample/`` (format: :mod:`featbench.features_sample`, written
by the runner). A report draws only what the run wrote: it never re-creates extractors or reads
the feature cache (a run folder without ``features-sample/`` gets no embedding figure, and says why).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from featbench.features_sample import (MAX_DIM, MAX_POINTS, SAMPLE_DIR, Preprocessed, l2_rows,  # noqa: F401
                                       read_features_sample, reduce_features, write_features_sample)

from .tables import strip_layers


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


def tsne_2d(X: np.ndarray, seed: int = 0) -> np.ndarray:
    """L2-normalise rows, PCA to at most 50 dimensions, then t-SNE to 2-D (scikit-learn)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    done = isinstance(X, Preprocessed)
    X = np.asarray(X, dtype=np.float64)
    if not done:
        X = l2_rows(X)
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
