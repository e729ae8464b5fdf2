"""The one linear classifier on top of every feature: standardise, pick C by CV, fit, score.

* Standardisation (zero mean, unit variance) is fitted on the training split only.
* ``logreg``: multinomial logistic regression (L2, lbfgs); ``svm``: one-vs-rest linear SVM
  (squared hinge, liblinear). Both are entries of :data:`CLASSIFIERS`; another classifier is one
  registered estimator factory (``featbench list classifiers``). ``1nn``: Euclidean nearest
  neighbour, the convention of the classic domain-adaptation tables: registered with
  ``tunes_c=False`` and ``standardise=False`` (the features as the protocol or the extractor's
  preprocessing left them, e.g. ``precomputed:norm=l1,zscore=domain``); reports rank it apart from
  the linear probes.
* C is chosen by stratified k-fold cross-validation on the training split over a log grid
  (``C_GRID``); the fold count shrinks to the smallest class size when classes are tiny.
* Scores: top-1 accuracy and mean per-class accuracy (the mean of per-class recalls, the
  Caltech-101 / 15-Scene convention).

Two things make this fast without changing what is computed:

* When there are more feature dimensions than training rows (HOG's 8100-d or a Fisher vector's
  33k-d on a few hundred images), the standardised features are projected onto the span of the
  training rows (``RowSpan``). For any L2-penalised linear model the optimal weight vector lies
  in that span (representer theorem: the loss gradient is ``X.T @ g``), so the optimum and every
  prediction are the same as in the full space, at the cost of an n x n problem instead of n x d.
  (lbfgs stops at ``tol`` before the exact optimum, in either space at a slightly different point:
  early stopping acts as extra regularisation, a little differently in each space; README,
  "Measured design choices", has the measurement.)
* The C grid is walked from small to large with warm starts (logistic regression), and the
  standardisation and projection of each CV fold are computed once for the whole grid.

Every random choice is seeded from ``seed``.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from featbench.registry import Registry

C_GRID = tuple(float(c) for c in 10.0 ** np.arange(-4, 3))

#: name -> estimator factory ``(C=1.0, seed=0, warm_start=False) -> scikit-learn classifier``.
#: Registered with ``tunes_c=False`` the factory's C is ignored and no cross-validation is run
#: (a classifier without a regularisation constant); otherwise C is chosen over ``C_GRID``.
CLASSIFIERS: Registry[Callable[..., Any]] = Registry("classifier", entry_points="featbench.classifiers")


@CLASSIFIERS.register("logreg", summary="multinomial logistic regression (L2, lbfgs), C by cross-validation")
def logreg(C: float = 1.0, seed: int = 0, warm_start: bool = False):
    return LogisticRegression(C=C, max_iter=1000, tol=1e-4, random_state=seed, warm_start=warm_start)


@CLASSIFIERS.register("svm", summary="one-vs-rest linear SVM (squared hinge, liblinear), C by cross-validation")
def svm(C: float = 1.0, seed: int = 0, warm_start: bool = False):
    return LinearSVC(C=C, max_iter=5000, random_state=seed)


@CLASSIFIERS.register("1nn", summary="Euclidean 1-nearest neighbour on the features as given (no standardisation, no C)",
                      tunes_c=False, standardise=False)
def one_nn(C: float = 1.0, seed: int = 0, warm_start: bool = False):
    """The classifier of the classic domain-adaptation tables (Gong et al. 2012, Fernando et al. 2013)."""
    from sklearn.neighbors import KNeighborsClassifier

    return KNeighborsClassifier(n_neighbors=1, algorithm="brute", metric="euclidean")


@dataclass
class Evaluation:
    classifier: str
    C: float
    cv_score: float
    top1: float
    mean_class_acc: float
    fit_s: float
    y_pred: np.ndarray


class RowSpan(TransformerMixin, BaseEstimator):
    """Project rows onto the span of the training rows when ``d > n``; otherwise pass through.

    Uses the eigendecomposition of the n x n Gram matrix (float64); directions whose singular
    value is below ``rtol`` times the largest carry no training signal and are dropped.
    """

    def __init__(self, rtol: float = 1e-6):
        self.rtol = rtol

    def fit(self, X, y=None):
        X = np.asarray(X)
        n, d = X.shape
        if d <= n:
            self.components_ = None
            return self
        X64 = X.astype(np.float64, copy=False)
        eigval, eigvec = np.linalg.eigh(X64 @ X64.T)
        sing = np.sqrt(np.clip(eigval, 0.0, None))
        keep = sing > self.rtol * sing.max() if sing.max() > 0 else np.zeros_like(sing, bool)
        keep[np.argmax(sing)] = True  # always at least one direction
        # right singular vectors: V = X.T U / s  (d x r, orthonormal columns)
        self.components_ = ((X64.T @ eigvec[:, keep]) / sing[keep]).astype(np.float32)
        return self

    def transform(self, X):
        X = np.asarray(X, dtype=np.float32)
        return X if self.components_ is None else X @ self.components_


def make_classifier(kind: str, C: float = 1.0, seed: int = 0, warm_start: bool = False):
    """The model alone (no preprocessing); an unknown kind is a FeatbenchError naming the known ones."""
    return CLASSIFIERS.get(kind)(C=C, seed=seed, warm_start=warm_start)


def make_pipeline_for(kind: str, C: float = 1.0, seed: int = 0):
    """Standardise, project onto the training rows' span, linear model: the whole classifier
    (the model alone for classifiers registered with ``standardise=False``: ``1nn``)."""
    model = make_classifier(kind, C=C, seed=seed)
    if not CLASSIFIERS.entry(kind).meta.get("standardise", True):
        return make_pipeline(model)
    return make_pipeline(StandardScaler(), RowSpan(), model)


def _fold_scores(X, y, train, valid, kind, c_grid, seed) -> list[float]:
    prep = make_pipeline(StandardScaler(), RowSpan()).fit(X[train])
    Z_train, Z_valid = prep.transform(X[train]), prep.transform(X[valid])
    model = make_classifier(kind, seed=seed, warm_start=True)
    scores = {}
    for C in sorted(c_grid):  # small C first: each fit starts from the smoother previous solution
        model.set_params(C=C).fit(Z_train, y[train])
        scores[C] = accuracy_score(y[valid], model.predict(Z_valid))
    return [scores[C] for C in c_grid]


def fit_evaluate(X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, y_test: np.ndarray,
                 kind: str = "logreg", seed: int = 0, c_grid: tuple[float, ...] = C_GRID,
                 folds: int = 3, n_jobs: int = 1) -> Evaluation:
    """Choose C by stratified CV on the training split, refit on all of it, score the test split.

    Ties in CV accuracy go to the first C of ``c_grid`` (as in scikit-learn's GridSearchCV).
    """
    start = time.perf_counter()
    make_classifier(kind)  # unknown kind: fail before any work
    X_train = np.asarray(X_train, dtype=np.float32)
    y_train = np.asarray(y_train)
    _, counts = np.unique(y_train, return_counts=True)
    n_splits = int(min(folds, counts.min()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if not CLASSIFIERS.entry(kind).meta.get("tunes_c", True):  # nothing to choose
            C, cv_score = float("nan"), float("nan")
        elif n_splits >= 2 and len(c_grid) > 1:
            cv = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
            per_fold = Parallel(n_jobs=n_jobs)(
                delayed(_fold_scores)(X_train, y_train, tr, va, kind, c_grid, seed) for tr, va in cv.split(X_train, y_train))
            mean = np.mean(per_fold, axis=0)
            best = int(np.argmax(mean))
            C, cv_score = float(c_grid[best]), float(mean[best])
        else:  # too few images per class to cross-validate: the middle of the grid, recorded as such
            C, cv_score = float(c_grid[len(c_grid) // 2]), float("nan")
        model = make_pipeline_for(kind, C=C, seed=seed).fit(X_train, y_train)
    y_pred = model.predict(np.asarray(X_test, dtype=np.float32))
    return Evaluation(classifier=kind, C=C, cv_score=cv_score,
                      top1=float(accuracy_score(y_test, y_pred)),
                      mean_class_acc=float(balanced_accuracy_score(y_test, y_pred)),
                      fit_s=time.perf_counter() - start, y_pred=y_pred)
