"""Ablation of featbench's dense-SIFT bag of words toward the plain baseline, on one or more shifts.

    python tests/benchmarks/ablate_dense_sift.py DATASET_DIR SOURCE TARGET[,TARGET..] \
        --variants 'default;flat=drop;...' [--seed 0]

Each variant is a set of ``sift-dense-bow-spm`` options (``default`` = none) plus two switches
this script adds: ``region_norm=true`` (each pyramid region's histogram normalised on its own, as
the plain script does, instead of featbench's division of every level by the image's descriptor
count) and ``C=VALUE`` (C fixed instead of chosen by cross-validation). Descriptors are computed
once per local stage (``LocalStage.key``) and kept in memory while consecutive variants share it,
so variants that change only the encoding cost k-means and encoding only. The codebook sample follows ``LocalEncodingExtractor.fit`` (the same
seeded per-image sample and cap) and the classifier is featbench's own ``fit_evaluate`` (C by
3-fold CV over ``C_GRID``), so a ``default`` row equals ``featbench run``'s number.
Prints one line per variant and target: top-1 %, the chosen C, and the most predicted class's share.
"""
from __future__ import annotations

import argparse
import time
from collections import Counter

import numpy as np

from featbench.classifier import C_GRID, fit_evaluate
from featbench.datasets.folder import read_dataset
from featbench.features import create
from featbench.features.encodings import (MAX_POINTS_PER_CLUSTER, finest_cells, homogeneous_kernel_map,
                                          level_sums, pyramid_weights, sample_rows, stable_rng)
from featbench.features.local import load_pixels


def region_normalised(encoder, xy: np.ndarray, desc: np.ndarray) -> np.ndarray:
    """The plain script's pyramid: each region's histogram L1- (then Hellinger- or kernel-) mapped alone."""
    from featbench.features.encodings import nearest

    words = nearest(desc, encoder.centroids)
    cells = finest_cells(xy, encoder.levels)
    counts = np.bincount(cells * encoder.k + words, minlength=4 ** (encoder.levels - 1) * encoder.k)
    regions = [r / max(r.sum(), 1.0) for level in level_sums(counts.reshape(-1, encoder.k).astype(np.float64),
                                                              encoder.levels) for r in level]
    hist = np.concatenate(regions)
    if encoder.norm == "hellinger":
        return np.sqrt(hist).astype(np.float32)
    return homogeneous_kernel_map(hist[None], encoder.kmap)[0] if encoder.kmap else hist.astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dataset")
    ap.add_argument("source")
    ap.add_argument("targets")
    ap.add_argument("--variants", default="default")
    ap.add_argument("--base", default="sift-dense-bow-spm")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    data = read_dataset(args.dataset)
    source = sorted(data.in_group(args.source), key=lambda r: r.relpath)
    targets = {t: sorted(data.in_group(t), key=lambda r: r.relpath) for t in args.targets.split(",")}
    described: dict[str, dict[str, object]] = {}
    for variant in args.variants.split(";"):
        t0 = time.perf_counter()
        opts = dict(o.split("=") for o in variant.split(",") if "=" in o)
        region_norm = opts.pop("region_norm", "false") == "true"
        c_grid = (float(opts.pop("C")),) if "C" in opts else C_GRID
        spec = args.base + (":" + ",".join(f"{k}={v}" for k, v in opts.items()) if opts else "")
        ex = create(spec)
        stage = ex.stage
        if stage.key not in described:  # one stage in memory at a time (~2.6 MB per image at the default grid)
            described = {stage.key: {}}
        cache = described[stage.key]
        for rec in [*source, *(r for recs in targets.values() for r in recs)]:
            if rec.uid not in cache:
                cache[rec.uid] = stage.compute(load_pixels(rec))
        sample = np.concatenate([sample_rows(cache[r.uid].desc, ex.max_desc, stable_rng(args.seed, r.uid))
                                 for r in sorted(source, key=lambda r: r.uid)]).astype(np.float32)
        sample = sample_rows(sample, MAX_POINTS_PER_CLUSTER * ex.k, stable_rng(args.seed, "all"))
        encoder = ex.new_encoder().fit(sample, args.seed)
        encode = (lambda f: region_normalised(encoder, f.xy, f.desc)) if region_norm else \
            (lambda f: encoder.encode(f.xy, f.desc))
        X_train = np.stack([encode(cache[r.uid]) for r in source])
        y_train = np.array([r.label for r in source])
        for name, recs in targets.items():
            X_test = np.stack([encode(cache[r.uid]) for r in recs])
            y_test = np.array([r.label for r in recs])
            ev = fit_evaluate(X_train, y_train, X_test, y_test, seed=args.seed, c_grid=c_grid)
            top_class, top_n = Counter(ev.y_pred).most_common(1)[0]
            print(f"{variant:55s} {args.source}->{name:8s} top-1 {100 * ev.top1:5.1f}  C={ev.C:g}  "
                  f"most predicted {top_class} {100 * top_n / len(recs):.0f} %  dim {X_train.shape[1]}  "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
