"""The plain dense-SIFT baseline that featbench's ``sift-dense-bow-spm`` is compared with (issue 14).

    python tests/benchmarks/plain_dense_sift.py DATASET_DIR SOURCE TARGET [--seed 0] [--k 1000]
    python tests/benchmarks/plain_dense_sift.py /root/featbench-data/pacs_subset photo cartoon
    python tests/benchmarks/plain_dense_sift.py ../shared/datasets/caltech101_mini train test

Deliberately written without featbench's extractors, as anyone would write it from textbook
pieces, so that it is an independent reference:

* OpenCV SIFT descriptors (``cv2.SIFT.compute``) on a grid every 8 px, keypoint size 16 px,
  on the grey image at its own size (no resizing; ``--max-side`` shrinks larger images);
* faiss k-means, ``--k`` words (1000), on up to ``--per-image`` (200) descriptors sampled from
  each training image;
* hard assignment; a 2-level pyramid (1x1 + 2x2), each region's histogram L1-normalised and
  square-rooted (Hellinger), concatenated;
* scikit-learn ``StandardScaler`` + ``LogisticRegression`` with C picked by stratified 3-fold
  cross-validation over featbench's own grid (``featbench.classifier.C_GRID``) on the
  training images only. Prints top-1 on the target.

The dataset is any ``DIR/<group>/<class>/<file>`` tree (``MANIFEST.tsv`` is not needed);
SOURCE and TARGET name groups: domains (``photo``, ``cartoon``) or splits (``train``, ``test``).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import faiss
import numpy as np
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from featbench.classifier import C_GRID

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


def list_group(root: Path, group: str) -> tuple[list[Path], list[str]]:
    files = sorted(p for p in (root / group).glob("*/*") if p.suffix.lower() in IMAGE_SUFFIXES)
    return files, [p.parent.name for p in files]


def grey(path: Path, max_side: int | None) -> np.ndarray:
    gray = np.asarray(Image.open(path).convert("L"))
    if max_side and max(gray.shape) > max_side:
        scale = max_side / max(gray.shape)
        gray = cv2.resize(gray, (round(gray.shape[1] * scale), round(gray.shape[0] * scale)),
                          interpolation=cv2.INTER_AREA)
    return gray


def dense_sift(gray: np.ndarray, step: int = 8, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Descriptors ``[N, 128]`` and their positions in ``[0, 1)`` on a grid ``step`` px apart."""
    h, w = gray.shape
    kps = [cv2.KeyPoint(float(x), float(y), size) for y in range(step, h - step + 1, step)
           for x in range(step, w - step + 1, step)]
    kps, desc = cv2.SIFT_create().compute(gray, kps)
    xy = np.array([k.pt for k in kps], dtype=np.float32) / np.array([w, h], dtype=np.float32)
    return np.minimum(xy, 0.999), desc.astype(np.float32)


def encode(xy: np.ndarray, desc: np.ndarray, index: faiss.Index, k: int) -> np.ndarray:
    """Hellinger-normalised 1x1 + 2x2 pyramid of word histograms, ``[5 * k]``."""
    _, words = index.search(desc, 1)
    cell = (xy[:, 1] * 2).astype(int) * 2 + (xy[:, 0] * 2).astype(int)
    regions = [np.bincount(words[:, 0], minlength=k)]
    regions += [np.bincount(words[cell == c, 0], minlength=k) for c in range(4)]
    return np.concatenate([np.sqrt(r / max(r.sum(), 1)) for r in regions]).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dataset", type=Path)
    ap.add_argument("source")
    ap.add_argument("target")
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--per-image", type=int, default=200)
    ap.add_argument("--max-side", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    train_files, y_train = list_group(args.dataset, args.source)
    test_files, y_test = list_group(args.dataset, args.target)
    train = [dense_sift(grey(p, args.max_side)) for p in train_files]
    test = [dense_sift(grey(p, args.max_side)) for p in test_files]
    sample = np.concatenate([d[rng.choice(len(d), min(len(d), args.per_image), replace=False)] for _, d in train])
    km = faiss.Kmeans(128, args.k, niter=25, seed=args.seed, verbose=False)
    km.train(np.ascontiguousarray(sample))
    X_train = np.stack([encode(xy, d, km.index, args.k) for xy, d in train])
    X_test = np.stack([encode(xy, d, km.index, args.k) for xy, d in test])
    search = GridSearchCV(make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
                          {"logisticregression__C": list(C_GRID)},
                          cv=StratifiedKFold(3, shuffle=True, random_state=args.seed))
    search.fit(X_train, y_train)
    top1 = float(np.mean(search.predict(X_test) == np.array(y_test)))
    print(f"{args.dataset.name}:{args.source}->{args.target}  plain dense SIFT (8 px, size 16), k={args.k}, "
          f"Hellinger 1x1+2x2, logreg C={search.best_params_['logisticregression__C']:g}: "
          f"top-1 {100 * top1:.1f} % ({len(train_files)} train / {len(test_files)} test images, "
          f"dim {X_train.shape[1]}, {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
