"""``precomputed``: features read from files instead of computed from pixels.

The published domain-adaptation tables were made from released feature files (GFK's SURF-800
histograms, DeCAF / CaffeNet and GoogLeNet activations for Office-Caltech-10). This extractor
hands those rows to featbench's protocols, adaptation methods, classifiers and reports.

Two uses:

* **a feature-file dataset** (:mod:`featbench.datasets.feature_files`): each record is a row of a
  file and brings it along; no ``path`` option is needed::

      featbench run SUITE --tasks 'office_caltech10_surf:amazon->webcam' \\
          --extractors precomputed:norm=l1,zscore=domain

* **an image dataset** with a feature file per domain (or one for all): ``path`` names it, with
  ``{group}`` standing for the record's domain or split (``path=/data/surf/{group}.mat``). Rows are
  matched to images by ``match``:

  ``path``   the file lists image paths (``paths``/``imgNames``, a parquet ``path`` column, a
             ``.npy``'s ``NAME.index.txt``); a row matches the record whose relpath equals it, or
             ends with it (or the other way round), with or without the extension
  ``key``    the file lists keys (``keys``/``sha256``, a parquet ``key`` column): the image's
             sha256 (its featbench uid) or its relpath
  ``order``  row i is the i-th image of that group, images sorted by relpath; the counts must agree
  ``auto``   (default) ``path`` if the file lists paths, else ``key`` if it lists keys, else ``order``

  When the file has labels, every matched row's label must name the image's class consistently
  (one label value per class); any mismatch, a missing row, or a count that differs raises a
  FeatbenchError naming the file.

Preprocessing, recorded in the spec and the cache key: ``norm=none|l1|l2`` per row, then
``zscore=none|domain``: each column standardised over every row of the same domain in the file
(the releases' own recipe: ``fts ./ sum(fts,2)`` then ``zscore(fts,1)``, before any sampling).
``family=classical|cnn`` says which report rows the features sit with (SURF: classical; DeCAF:
cnn). ``features=NAME`` / ``labels=NAME`` pick the arrays when the defaults do not find them.
"""
from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from featbench.datasets.feature_files import (NORMS, ZSCORES, FeatureRowRecord, FeatureTable, preprocess,
                                              read_feature_file)
from featbench.errors import FeatbenchError

from .base import Extractor, register

MATCHES = ("auto", "path", "key", "order")


def _norm_path(text: str) -> str:
    return str(text).replace("\\", "/").lstrip("./").strip("/")


def _path_index(entries: list[str]) -> dict[str, int]:
    """Every '/'-suffix of every entry (with and without extension) -> row; ambiguous suffixes dropped."""
    index: dict[str, int] = {}
    ambiguous: set[str] = set()
    for row, entry in enumerate(entries):
        parts = _norm_path(entry).split("/")
        for k in range(len(parts)):
            suffix = "/".join(parts[k:])
            for key in {suffix, str(Path(suffix).with_suffix(""))}:
                if key in index and index[key] != row:
                    ambiguous.add(key)
                index.setdefault(key, row)
    return {k: v for k, v in index.items() if k not in ambiguous}


@register("precomputed")
class Precomputed(Extractor):
    """Features read from .mat/.npz/.npy/.parquet files (published releases), matched to images or file rows."""

    name = "precomputed"
    version = "1"
    reads_pixels = False  # featbench speed has nothing to time: the features are read, not computed
    params = {"path": None, "match": "auto", "features": None, "labels": None, "norm": "none",
              "zscore": "none", "family": "classical"}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for option, allowed in (("match", MATCHES), ("norm", NORMS), ("zscore", ZSCORES),
                                ("family", ("classical", "cnn"))):
            if getattr(self, option) not in allowed:
                raise FeatbenchError(f"extractor 'precomputed': {option} must be one of {', '.join(allowed)}, "
                                     f"not {getattr(self, option)!r}")
        self.family = self.family  # instance attribute: the report groups rows by it
        self._dataset = None
        self._prepared: dict[str, np.ndarray] = {}
        self._rows: dict[str, int] = {}  # uid -> row, for image records
        self._file_of: dict[str, str] = {}  # uid -> file

    # -- identity -----------------------------------------------------------------------------
    def bind_dataset(self, dataset: Any) -> None:
        """Match the files to the dataset's images now (all of them, so 'order' sees whole groups)."""
        self._dataset = dataset
        if self.path is not None:
            self._match_all([r for r in dataset.records if not isinstance(r, FeatureRowRecord)])

    def _files(self) -> list[str]:
        if self.path is None:
            return []
        groups = self._dataset.groups if self._dataset is not None else []
        text = str(self.path)
        return sorted({text.format(group=g) for g in groups} if "{group}" in text else {text})

    def cache_key(self, output: str = "") -> str:
        digests = [read_feature_file(f, self.features, self.labels).sha256 for f in self._files()]
        return hashlib.sha256("|".join([super().cache_key(output), *digests]).encode()).hexdigest()[:20]

    def describe(self) -> dict[str, Any]:
        files = [{"path": f, "sha256": read_feature_file(f, self.features, self.labels).sha256} for f in self._files()]
        return {**super().describe(), "files": files,
                "preprocessing": f"norm={self.norm}, zscore={self.zscore} (over every row of a domain in its file)"}

    # -- reading --------------------------------------------------------------------------------
    def _table(self, path: str) -> FeatureTable:
        return read_feature_file(path, self.features, self.labels)

    def _features_of(self, path: str) -> np.ndarray:
        if path not in self._prepared:
            t = self._table(path)
            self._prepared[path] = preprocess(t.X, self.norm, self.zscore, t.domains)
        return self._prepared[path]

    def _match_all(self, records: Sequence[Any]) -> None:
        by_file: dict[str, list[Any]] = defaultdict(list)
        text = str(self.path)
        for r in records:
            by_file[text.format(group=r.group) if "{group}" in text else text].append(r)
        for path, recs in by_file.items():
            t = self._table(path)
            rows = self._match(t, recs)
            self._check_labels(t, recs, rows)
            for r, i in zip(recs, rows):
                self._rows[r.uid], self._file_of[r.uid] = i, path

    def _match(self, t: FeatureTable, recs: list[Any]) -> list[int]:
        how = self.match
        if how == "auto":
            how = "path" if t.paths else "key" if t.keys else "order"
        if how == "order":
            if len(recs) != len(t.X):
                raise FeatbenchError(f"{t.path}: {len(t.X)} feature rows but {len(recs)} images of "
                                     f"{', '.join(sorted({r.group for r in recs}))} to match in order")
            order = sorted(range(len(recs)), key=lambda i: recs[i].relpath)
            rows = [0] * len(recs)
            for row, i in enumerate(order):
                rows[i] = row
            return rows
        entries = t.paths if how == "path" else t.keys
        if not entries:
            raise FeatbenchError(f"{t.path}: match={how} but the file lists no {how}s")
        index = _path_index(entries) if how == "path" else {str(k): i for i, k in enumerate(entries)}
        rows, missing = [], []
        for r in recs:
            rel = _norm_path(r.relpath)
            cands = [r.uid, rel] if how == "key" else \
                [rel, rel.split("/", 1)[-1], str(Path(rel).with_suffix("")), str(Path(rel.split("/", 1)[-1]).with_suffix(""))]
            row = next((index[c] for c in cands if c in index), None)
            if row is None:
                missing.append(r.relpath)
            rows.append(row)
        if missing:
            raise FeatbenchError(f"{t.path}: no row for {len(missing)} image(s) by {how}, e.g. {missing[0]}")
        return rows

    @staticmethod
    def _check_labels(t: FeatureTable, recs: list[Any], rows: list[int]) -> None:
        if t.labels is None:
            return
        seen: dict[Any, str] = {}
        for r, i in zip(recs, rows):
            lab = t.labels[i].item() if hasattr(t.labels[i], "item") else t.labels[i]
            if seen.setdefault(lab, r.label) != r.label:
                raise FeatbenchError(f"{t.path}: row {i} (label {lab}) matched to {r.relpath} of class '{r.label}', "
                                     f"but label {lab} was class '{seen[lab]}' elsewhere: rows and images do not match")
        if len(set(seen.values())) != len(seen):
            raise FeatbenchError(f"{t.path}: several label values fall on one class ({seen}): rows and images do not match")

    # -- transform ------------------------------------------------------------------------------
    def transform_outputs(self, images: Sequence[Any]) -> dict[str, np.ndarray]:
        out = []
        pending = [r for r in images if not isinstance(r, FeatureRowRecord) and getattr(r, "uid", None) not in self._rows]
        if pending:
            if self.path is None:
                raise FeatbenchError("extractor 'precomputed' needs path=FILE for image datasets "
                                     "(a feature-file dataset's records bring their own rows)")
            self._match_all(pending)
        for r in images:
            if isinstance(r, FeatureRowRecord):
                out.append(self._features_of(r.path)[r.row])
            elif isinstance(r, np.ndarray):
                raise FeatbenchError("extractor 'precomputed' reads features for dataset records, not pixel arrays")
            else:
                out.append(self._features_of(self._file_of[r.uid])[self._rows[r.uid]])
        dims = {len(v) for v in out}
        if len(dims) > 1:
            raise FeatbenchError(f"extractor '{self.spec}': the feature files have different dimensions {sorted(dims)}")
        return {"": np.stack(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)}
