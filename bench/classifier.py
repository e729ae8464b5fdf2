"""The one linear classifier on top of every feature: standardise, pick C by CV, fit, score.

* Standardisation (zero mean, unit variance) is fitted on the training split only.
* ``logreg``: multinomial logistic regression (L2, lbfgs); ``svm``: one-vs-rest linear SVM
  (squared hinge, liblinear).
* C is chosen by stratified k-fold cross-validation on the training split over a log grid
  (``C_GRID``); the fold count shrinks to the smallest class size when classes are tiny.
* Scores: top-1 accuracy and mean per-class accuracy (the mean of per-class recalls, the
  Caltech-101 / 15-Scene convention).

Every random choice is seeded from ``seed``.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from featbench.errors import FeatbenchError

C_GRID = tuple(float(c) for c in 10.0 ** np.arange(-4, 3))
CLASSIFIERS = ("logreg", "svm")


@dataclass
class Evaluation:
    classifier: str
    C: float
    cv_score: float
    top1: float
    mean_class_acc: float
    fit_s: float
    y_pred: np.ndarray


def make_classifier(kind: str, C: float = 1.0, seed: int = 0):
    if kind == "logreg":
        model = LogisticRegression(C=C, max_iter=1000, tol=1e-4, random_state=seed)
    elif kind == "svm":
        model = LinearSVC(C=C, max_iter=5000, random_state=seed)
    else:
        raise FeatbenchError(f"unknown classifier '{kind}'; known: {', '.join(CLASSIFIERS)}")
    return make_pipeline(StandardScaler(), model)


def fit_evaluate(X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, y_test: np.ndarray,
                 kind: str = "logreg", seed: int = 0, c_grid: tuple[float, ...] = C_GRID,
                 folds: int = 3, n_jobs: int = 1) -> Evaluation:
    """Choose C by stratified CV on the training split, refit on all of it, score the test split."""
    start = time.perf_counter()
    y_train = np.asarray(y_train)
    _, counts = np.unique(y_train, return_counts=True)
    n_splits = int(min(folds, counts.min()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if n_splits >= 2 and len(c_grid) > 1:
            cv = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
            search = GridSearchCV(make_classifier(kind, seed=seed), {f"{_step(kind)}__C": list(c_grid)},
                                  cv=cv, scoring="accuracy", n_jobs=n_jobs, refit=True)
            search.fit(X_train, y_train)
            model, C, cv_score = search.best_estimator_, float(search.best_params_[f"{_step(kind)}__C"]), float(search.best_score_)
        else:  # too few images per class to cross-validate: the middle of the grid, recorded as such
            C, cv_score = float(c_grid[len(c_grid) // 2]), float("nan")
            model = make_classifier(kind, C=C, seed=seed).fit(X_train, y_train)
    y_pred = model.predict(X_test)
    return Evaluation(classifier=kind, C=C, cv_score=cv_score,
                      top1=float(accuracy_score(y_test, y_pred)),
                      mean_class_acc=float(balanced_accuracy_score(y_test, y_pred)),
                      fit_s=time.perf_counter() - start, y_pred=y_pred)


def _step(kind: str) -> str:
    return "logisticregression" if kind == "logreg" else "linearsvc"
