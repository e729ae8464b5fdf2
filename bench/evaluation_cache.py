"""Evaluations already computed, found again by the hash of everything they depend on.

A cached re-run reads every feature back in seconds and then spent its time in the classifier:
on the full Caltech-101 decaf task, 25 evaluations of 3-fold cross-validation over 7 C values
cost about 2,500 s, for numbers that cannot change, since the features, labels and settings
did not. The runner therefore keeps each finished evaluation (chosen C, CV score, scores,
predictions, iterations, the fit's measured seconds and the training matrix's shape) under ``ROOT/evaluations/`` of the
feature cache, keyed by a SHA-256 of:

* the evaluation's inputs, by the digests of their feature rows (the BLAKE2b-64 the feature
  store keeps per row, :func:`inputs_digest`) and their labels, training, labelled target and test
  apart: a changed feature, split or trial is a new key, and a re-run finds its evaluations from the
  store's index without reading a row (:mod:`featbench.feature_rows`);
* the domain-adaptation method (``none`` included) applied before the fit, and for a method other
  than ``none`` the code of :mod:`featbench.adaptation`: the key holds the method's inputs, not its
  output, so a hit skips the method as well as the fit;
* every argument of ``fit_evaluate`` that can change the result (classifier, seed, solver,
  tolerance, iteration cap, the probe's device type; its defaults, such as the C grid and the
  folds, live in :mod:`featbench.classifier`, whose source is part of the key);
* the code of :mod:`featbench.classifier`, :mod:`featbench.probe` and the module that registers
  the classifier (their syntax trees without docstrings, so comments and docstrings do not count),
  and the numpy, torch and scikit-learn versions: an edited solver or another library build is a
  new key, never a stale answer.

A hit returns the stored :class:`~featbench.classifier.Evaluation` with ``fit_s`` as it was
measured, so cost columns (and the transfer study's cost axis) keep meaning the classifier's cost;
records say ``fit_reused``. Its model is None, or for a caller that needs the fitted model (the
report gallery's class-activation maps) the raw-feature weights kept beside the entry
(``<key>.weights.npz``) as :class:`~featbench.classifier.LinearWeights`. ``--no-cache`` turns this off with the feature
cache; ``featbench cache clear`` deletes it. Entries are small JSON files (no pickle); one that
does not parse, or whose fields do not fit, is a miss and is rewritten.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import inspect
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from featbench.atomic import atomic_write_text, atomic_write_with
from featbench.errors import FeatbenchError

FORMAT = 2  # 2: keyed by row digests and the adaptation method, every entry keeps its training shape
_SCALARS = ("classifier", "C", "cv_score", "top1", "mean_class_acc", "fit_s", "solver", "tol", "max_iter",
            "n_iter", "converged")
_FLOATS = ("C", "cv_score", "top1", "mean_class_acc", "fit_s")  # may be NaN, which JSON stores as null


def code_of(source: str) -> str:
    """The code of a module's source, without what cannot change a number: comments, docstrings,
    blank lines and line positions are dropped (``ast.dump`` of the tree less its docstrings), so
    editing a docstring keeps the cache while any change to a statement, literal or name is a new key."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, include_attributes=False)


@functools.cache
def _code_identity(module_names: tuple[str, ...]) -> str:
    """SHA-256 of the named modules' code (:func:`code_of`) and of the libraries that compute the numbers."""
    import sklearn
    import torch

    h = hashlib.sha256()
    for name in module_names:
        h.update(name.encode())
        try:
            source = Path(inspect.getsourcefile(importlib.import_module(name))).read_text(encoding="utf-8")
            h.update(code_of(source).encode())
        except (TypeError, OSError, ImportError, SyntaxError, UnicodeDecodeError):  # no code to read: never reuse
            h.update(os.urandom(16))
    for lib in (np, torch, sklearn):
        h.update(f"{lib.__name__}={lib.__version__}".encode())
    return h.hexdigest()


def inputs_digest(layout: str, parts: Sequence[tuple[str, Sequence[bytes], np.ndarray]]) -> str:
    """SHA-256 that identifies an evaluation's inputs without their bytes: for each part (training,
    labelled target, test) the feature rows' digests in order (:func:`featbench.store.row_digest`)
    and the labels; ``layout`` (a row's dtype and length) says what the row digests stand for."""
    h = hashlib.sha256(f"featbench-inputs/{FORMAT}|{layout}".encode())
    for name, digests, labels in parts:
        labels = np.ascontiguousarray(labels, dtype=np.int64)
        h.update(f"|{name}:{len(digests)}:{len(labels)}|".encode())
        h.update(b"".join(digests))
        if labels.size:
            h.update(memoryview(labels).cast("B"))
    return h.hexdigest()


def evaluation_key(method: str, inputs: str, settings: dict[str, Any]) -> str:
    """The key of the domain-adaptation ``method`` (``adaptation.apply``, ``none`` for no change)
    followed by ``fit_evaluate(..., **settings)`` on the inputs :func:`inputs_digest` identifies:
    the settings that can change a number (``n_jobs`` cannot; ``device`` counts by its type: CUDA
    and CPU round differently), the solver's code (and :mod:`featbench.adaptation`'s for a method
    other than ``none``) and the library versions. Keyed by the method's inputs, not its output, a
    hit skips the method as well as the fit: CORAL and SA on 25,200-32,768-d features took 41 of the
    54 s of a cached Office-Caltech-10 task when only the fit was skipped."""
    from featbench import probe
    from featbench.classifier import CLASSIFIERS

    identity = {k: v for k, v in settings.items() if k != "n_jobs"}
    identity["device"] = probe.resolve_device(settings.get("device", "cpu")).type
    identity["adaptation"] = method
    h = hashlib.sha256(f"featbench-evaluation/{FORMAT}|{inputs}".encode())
    h.update(json.dumps(identity, sort_keys=True, default=str).encode())
    registering = CLASSIFIERS.entry(settings["kind"]).obj.__module__
    modules = {"featbench.classifier", "featbench.probe", registering}
    if method != "none":
        modules.add("featbench.adaptation")
    h.update(_code_identity(tuple(sorted(modules))).encode())
    return h.hexdigest()


class EvaluationCache:
    """Finished evaluations by :func:`evaluation_key` under ``root``; ``enabled=False``: always a miss."""

    def __init__(self, root: str | os.PathLike, enabled: bool = True,
                 on_write_error: Callable[[BaseException], None] | None = None) -> None:
        self.root = Path(root)
        self.enabled = enabled
        self.hits = self.misses = self.writes = 0
        self.on_write_error = on_write_error or warn_write_error

    def _path(self, key: str, suffix: str = ".json") -> Path:
        return self.root / key[:2] / f"{key}{suffix}"

    def get(self, key: str, n_test: int, with_weights: bool = False):
        """``(evaluation, (n_train, dim))`` stored under ``key``, or None; ``n_test`` guards the
        predictions' length, and the training matrix's shape (after adaptation) is what the record
        reports. The evaluation's model is None, or with ``with_weights`` the stored raw-feature
        weights (a miss when none were kept)."""
        from featbench.classifier import Evaluation, LinearWeights

        if not self.enabled:
            return None
        try:
            model = None
            if with_weights:
                with np.load(self._path(key, ".weights.npz"), allow_pickle=False) as z:
                    model = LinearWeights(z["W"], z["b"])
            entry = json.loads(self._path(key).read_text())
            if entry.get("format") != FORMAT:
                raise ValueError("another format")
            fields = {k: entry[k] for k in _SCALARS}
            y_pred = np.asarray(entry["y_pred"])
            if y_pred.shape != (n_test,):
                raise ValueError("predictions of another length")
            for k in _FLOATS:
                fields[k] = float("nan") if fields[k] is None else float(fields[k])
            shape = tuple(int(v) for v in entry["shape"])
            if len(shape) != 2:
                raise ValueError("no training shape")
        except (OSError, ValueError, KeyError, TypeError, AttributeError, EOFError):
            self.misses += 1
            return None
        self.hits += 1
        return Evaluation(**fields, y_pred=y_pred, model=model), shape

    def put(self, key: str, evaluation, shape: tuple[int, int],
            weights: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """Keep a finished evaluation, the training matrix's ``shape`` (after adaptation) and
        ``weights`` (``W``, ``b`` on raw features) when a caller will want the model back; a cache
        that cannot be written reports once and is left alone."""
        if not self.enabled:
            return
        entry = {"format": FORMAT, **{k: getattr(evaluation, k) for k in _SCALARS},
                 "y_pred": np.asarray(evaluation.y_pred).tolist(), "shape": [int(v) for v in shape]}
        for k in _FLOATS:
            entry[k] = None if entry[k] is None or math.isnan(entry[k]) else float(entry[k])
        try:
            if weights is not None:  # first: an entry is only complete once its JSON exists
                atomic_write_with(self._path(key, ".weights.npz"), lambda p: _save_weights(p, *weights))
            atomic_write_text(self._path(key), json.dumps(entry, default=_json_scalar))
        except (OSError, FeatbenchError) as exc:  # atomic writes raise OutputWriteError
            self.enabled = False
            self.on_write_error(exc)
            return
        self.writes += 1

    def counts(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "writes": self.writes}

    def stored(self) -> tuple[int, int]:
        """How many evaluations are on disk, and their bytes (weights included)."""
        entries = list(self.root.glob("*/*.json"))
        size = sum(p.stat().st_size for p in entries) + sum(p.stat().st_size for p in self.root.glob("*/*.weights.npz"))
        return len(entries), size


def _save_weights(path: Path, W: np.ndarray, b: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.savez would add ".npz" to the temporary name
        np.savez(f, W=np.asarray(W), b=np.asarray(b))


def warn_write_error(exc: BaseException) -> None:
    print(f"featbench: warning: {exc}; continuing without the evaluation cache", file=sys.stderr, flush=True)


def _json_scalar(obj: Any) -> Any:
    return obj.item() if isinstance(obj, np.generic) else str(obj)
