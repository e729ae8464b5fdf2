"""The one linear classifier on top of every feature: standardise, pick C by CV, fit, score.

* Standardisation (zero mean, unit variance) is fitted on the training split only.
* ``logreg``: multinomial logistic regression (L2, intercept not penalised; scikit-learn's
  ``LogisticRegression`` objective, the DeCAF convention); ``svm``: one-vs-rest linear SVM
  (squared hinge, L2, ``LinearSVC``'s objective and C). Both are entries of :data:`CLASSIFIERS`;
  another classifier is one registered estimator factory (``featbench list classifiers``).
  ``1nn``: Euclidean nearest neighbour, the convention of the classic domain-adaptation tables:
  registered with ``tunes_c=False`` and ``standardise=False`` (the features as the protocol or the
  extractor's preprocessing left them, e.g. ``precomputed:norm=l1,zscore=domain``); reports rank
  it apart from the linear probes.
* Solver (``solver=``): ``torch`` (default, for classifiers registered with a ``probe_loss``:
  logreg, svm), :mod:`featbench.probe`'s Newton solver run until the largest absolute gradient
  entry of ``C * sum(loss) + 0.5 ||W||^2`` is at most ``tol``, on CPU or CUDA; or ``sklearn``
  (lbfgs / liblinear at their own ``tol``: every corpus record made before torch became the
  default, at ``tol=1e-4``; with ``tol=1e-8`` the converged reference the torch solver is checked
  against). Records say which (``solver``). Other classifiers are always scikit-learn's.
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
  Only a fit stopped early depends on the space it ran in (early stopping acts as extra
  regularisation, differently in each space; README, "Measured design choices"), which is why
  model selection compares converged fits.
* The C grid is walked from small to large with warm starts, and the standardisation and
  projection of each CV fold are computed once for the whole grid.

Every random choice is seeded from ``seed``.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
from threadpoolctl import ThreadpoolController

from featbench import probe
from featbench.errors import FeatbenchError
from featbench.registry import Registry

C_GRID = tuple(float(c) for c in 10.0 ** np.arange(-4, 3))
SOLVERS = ("torch", "sklearn")

#: name -> estimator factory ``(C=1.0, seed=0, warm_start=False, **solver_options) -> scikit-learn
#: classifier``. Registered with ``tunes_c=False`` the factory's C is ignored and no cross-validation
#: is run (a classifier without a regularisation constant); otherwise C is chosen over ``C_GRID``.
#: ``probe_loss`` names the :mod:`featbench.probe` loss that fits the same model (``solver="torch"``);
#: ``sklearn_defaults`` is ``(tol, max_iter)`` as featbench always used them with scikit-learn.
CLASSIFIERS: Registry[Callable[..., Any]] = Registry("classifier", entry_points="featbench.classifiers")


@CLASSIFIERS.register("logreg", summary="multinomial logistic regression (L2), C by cross-validation",
                      probe_loss="multinomial", sklearn_defaults=(1e-4, 1000))
def logreg(C: float = 1.0, seed: int = 0, warm_start: bool = False, tol: float = 1e-4, max_iter: int = 1000):
    return LogisticRegression(C=C, max_iter=max_iter, tol=tol, random_state=seed, warm_start=warm_start)


@CLASSIFIERS.register("svm", summary="one-vs-rest linear SVM (squared hinge, L2), C by cross-validation",
                      probe_loss="squared_hinge", sklearn_defaults=(1e-4, 5000))
def svm(C: float = 1.0, seed: int = 0, warm_start: bool = False, tol: float = 1e-4, max_iter: int = 5000):
    return LinearSVC(C=C, max_iter=max_iter, tol=tol, random_state=seed)


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
    solver: str = "torch"
    tol: float = probe.DEFAULT_TOL
    max_iter: int = probe.DEFAULT_MAX_ITER
    n_iter: int = 0  # iterations of the final fit
    converged: bool = True  # every fit of the evaluation (CV and final) reached tol
    model: Any = None  # the fitted model: scikit-learn pipeline (standardise, RowSpan, linear model) or _TorchPath


@functools.cache
def _threadpools() -> ThreadpoolController:
    """The loaded BLAS/OpenMP libraries, found once (a search per call cost ~10 ms, more than a small fit)."""
    return ThreadpoolController()


def _blas_threads_for(flops: float):
    """One BLAS thread for small products (as :meth:`featbench.probe.Problem.threads_for_size`):
    below ~1 GFLOP, thread start-up and, on a shared machine, spinning threads cost more than they save."""
    return _threadpools().limit(limits=1 if flops < 1e9 else None)


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
        with _blas_threads_for(n * n * d):
            eigval, eigvec = np.linalg.eigh(X64 @ X64.T)
        sing = np.sqrt(np.clip(eigval, 0.0, None))
        keep = sing > self.rtol * sing.max() if sing.max() > 0 else np.zeros_like(sing, bool)
        keep[np.argmax(sing)] = True  # always at least one direction
        # right singular vectors: V = X.T U / s  (d x r, orthonormal columns)
        self.components_ = ((X64.T @ eigvec[:, keep]) / sing[keep]).astype(np.float32)
        return self

    def transform(self, X):
        X = np.asarray(X)
        X = X if X.dtype == np.float64 else X.astype(np.float32)  # float64 stays (sklearn reference fits)
        if self.components_ is None:
            return X
        with _blas_threads_for(2 * X.size * self.components_.shape[1]):
            return X @ self.components_


def make_classifier(kind: str, C: float = 1.0, seed: int = 0, warm_start: bool = False, **solver_options):
    """The scikit-learn model alone (no preprocessing); an unknown kind is a FeatbenchError naming the
    known ones. ``solver_options`` (``tol``, ``max_iter``) are passed on where given."""
    options = {k: v for k, v in solver_options.items() if v is not None}
    return CLASSIFIERS.get(kind)(C=C, seed=seed, warm_start=warm_start, **options)


def make_pipeline_for(kind: str, C: float = 1.0, seed: int = 0, **solver_options):
    """Standardise, project onto the training rows' span, scikit-learn model: the whole classifier
    (the model alone for classifiers registered with ``standardise=False``: ``1nn``)."""
    model = make_classifier(kind, C=C, seed=seed, **solver_options)
    if not CLASSIFIERS.entry(kind).meta.get("standardise", True):
        return make_pipeline(model)
    return make_pipeline(StandardScaler(), RowSpan(), model)


def original_space_weights(pipeline) -> tuple[np.ndarray, np.ndarray] | None:
    """``(W [classes, d], b [classes])`` with ``X @ W.T + b`` equal to the fitted pipeline's decision
    values on raw features ``X``: the linear model's weights mapped back through the RowSpan
    projection (``W_std = coef @ V.T``) and the standardisation (``W = W_std / sigma``,
    ``b = intercept - W @ mu``). A binary model's single row ``w`` becomes ``[-w, w]`` (class 0, 1), so
    the arg-max is the prediction either way. None for a classifier that is no linear model on
    standardised features (``1nn``). Used for class activation maps (report gallery). A torch-solver
    model maps its own weights back the same way."""
    if isinstance(pipeline, (_TorchPath, LinearWeights)):
        return pipeline.original_space_weights()
    steps = [step for _, step in pipeline.steps]
    if len(steps) != 3 or not hasattr(steps[2], "coef_"):
        return None
    scaler, span, model = steps
    coef = np.asarray(model.coef_, dtype=np.float64)
    if span.components_ is not None:
        coef = coef @ np.asarray(span.components_, dtype=np.float64).T
    W = coef / scaler.scale_
    b = np.asarray(model.intercept_, dtype=np.float64) - W @ scaler.mean_
    if len(W) == 1:
        W, b = np.concatenate([-W, W]), np.concatenate([-b, b])
    return W, b


@dataclass
class LinearWeights:
    """A fitted linear model as its raw-feature weights only (``W [classes, d]``, ``b [classes]``):
    what an evaluation read back from :mod:`featbench.evaluation_cache` carries as its model."""
    W: np.ndarray
    b: np.ndarray

    def original_space_weights(self) -> tuple[np.ndarray, np.ndarray]:
        return self.W, self.b


@dataclass
class _Settings:
    kind: str
    solver: str
    tol: float
    max_iter: int
    seed: int
    device: str

    @property
    def sklearn_dtype(self) -> type:
        """scikit-learn fits in the features' dtype; in float32 its lbfgs cannot resolve gradients
        much below its default tolerance, so a tighter (reference) fit gets float64 features."""
        default_tol = CLASSIFIERS.entry(self.kind).meta.get("sklearn_defaults", (0.0, None))[0]
        return np.float64 if self.tol is not None and self.tol < default_tol else np.float32

    @property
    def loss(self) -> str:
        return CLASSIFIERS.entry(self.kind).meta["probe_loss"]


class _SpanFeatures:
    """Standardisation and the row-span projection of the torch path, the same numbers as
    ``make_pipeline(StandardScaler(), RowSpan())`` with fewer products: the training rows' Gram
    matrix ``A A^T`` (``A`` the standardised training rows, float64) gives the eigenvectors ``U``
    and singular values ``s``; the training rows in the span are ``U * s`` (no product) and new rows
    ``B`` are ``(B A^T) U / s`` (no ``d x n`` basis is formed). With ``d <= n``: standardisation only.

    When ``d > n`` every product runs over blocks of ``block_cols`` feature columns, standardised
    into one reused float64 buffer, so no ``n x d`` float64 copy of the rows is ever made: on a
    3,030 x 25,200 pyramid those copies (and first-touch page faults on fresh memory) cost more
    than the products themselves."""

    def __init__(self, X: np.ndarray, rtol: float = RowSpan().rtol, block_cols: int = 2048) -> None:
        n, d = X.shape
        self.block_cols = int(block_cols)
        self.X = X if d > n else None  # the float32 training rows, standardised block by block
        if self.X is None:
            self.train = self._fit_scale(X).astype(np.float32)
            return
        self.mean_, self.scale_ = np.empty(d), np.empty(d)
        gram = np.zeros((n, n))
        with _blas_threads_for(n * n * d):
            for cols, A in self._blocks(X, fit=True):
                gram += A @ A.T
            eigval, eigvec = np.linalg.eigh(gram)
        sing = np.sqrt(np.clip(eigval, 0.0, None))
        keep = sing > rtol * sing.max() if sing.max() > 0 else np.zeros_like(sing, bool)
        keep[np.argmax(sing)] = True  # always at least one direction (as RowSpan)
        self.U, self.s = eigvec[:, keep], sing[keep]
        self.train = (self.U * self.s).astype(np.float32)

    def _fit_scale(self, X: np.ndarray) -> np.ndarray:
        """Standardise ``X`` (float64 copy) and set ``mean_``/``scale_`` for its columns."""
        self.mean_, self.scale_ = np.empty(X.shape[1]), np.empty(X.shape[1])
        A = X.astype(np.float64)
        _scale_columns(A, self.mean_, self.scale_)
        return A

    def _blocks(self, X: np.ndarray, fit: bool = False):
        """``(cols, standardised float64 block of X)`` over column blocks, in one reused buffer;
        with ``fit``, each block's ``mean_`` and ``scale_`` are computed from it first."""
        buf = np.empty((len(X), min(self.block_cols, X.shape[1])))
        for start in range(0, X.shape[1], self.block_cols):
            cols = slice(start, min(start + self.block_cols, X.shape[1]))
            A = buf[:, :cols.stop - cols.start]
            np.copyto(A, X[:, cols])
            if fit:
                _scale_columns(A, self.mean_[cols], self.scale_[cols])
            else:
                self._standardise(A, cols)
            yield cols, A

    def _standardise(self, A: np.ndarray, cols: slice = slice(None)) -> np.ndarray:
        """Standardise float64 rows ``A`` (the feature columns ``cols``) in place, with the fitted
        ``mean_`` and ``scale_``."""
        A -= self.mean_[cols]
        A /= self.scale_[cols]
        return A

    @property
    def orthogonal(self) -> bool:
        return self.X is not None

    def standardised_weights(self, W: np.ndarray) -> np.ndarray:
        """Weights ``[r, k]`` on the transformed rows as weights ``[d, k]`` on standardised features."""
        if self.X is None:
            return W
        M, out = (self.U / self.s) @ W, np.empty((self.X.shape[1], W.shape[1]))
        for cols, A in self._blocks(self.X):
            out[cols] = A.T @ M
        return out

    def transform(self, X: np.ndarray) -> np.ndarray:
        if self.X is None:
            return self._standardise(X.astype(np.float64)).astype(np.float32)
        cross = np.zeros((len(X), len(self.X)))
        with _blas_threads_for(2 * len(X) * self.X.size):
            for (cols, A), (_, B) in zip(self._blocks(self.X), self._blocks(X)):
                cross += B @ A.T
            return (cross @ self.U / self.s).astype(np.float32)


def _scale_columns(A: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> None:
    """Standardise the float64 columns of ``A`` in place, writing ``StandardScaler().fit``'s
    ``mean_`` and ``scale_`` into ``mean`` and ``scale`` (two-pass variance; near-constant columns
    get scale 1, decided as scikit-learn decides them). Bit-identical to scikit-learn's numbers,
    in one pass over one float64 copy."""
    n, eps = len(A), np.finfo(np.float64).eps
    mean[:] = A.mean(axis=0)
    A -= mean
    var = np.einsum("ij,ij->j", A, A) / n
    constant = var <= n * eps * var + (n * mean * eps) ** 2
    scale[:] = np.where(constant, 1.0, np.sqrt(var))
    A /= scale


class _TorchPath:
    """One training set (standardised and projected once) fitted along a C path with warm starts."""

    def __init__(self, X: np.ndarray, y: np.ndarray, st: _Settings) -> None:
        self.prep = _SpanFeatures(X)
        self.classes, codes = np.unique(y, return_inverse=True)
        self.st = st
        self.problem = probe.Problem(self.prep.train, codes, len(self.classes), loss=st.loss,
                                     device=probe.resolve_device(st.device), orthogonal=self.prep.orthogonal)
        self.solution: probe.Solution | None = None
        self._path: list[tuple[float, probe.Solution]] = []  # the last two (C, solution)

    def fit(self, C: float, warm: bool = True) -> probe.Solution:
        """With two classes scikit-learn fits one binomial weight vector, and the multinomial model
        at ``C / 2`` is that model (its two vectors are ``+-w/2``, penalised ``0.25 ||w||^2``)."""
        C_solve = C / 2 if self.st.loss == "multinomial" and len(self.classes) == 2 else C
        self.solution = self.problem.solve(C_solve, start=self._start(C_solve) if warm else None, tol=self.st.tol,
                                           max_iter=self.st.max_iter)
        self._path = (self._path + [(C_solve, self.solution)])[-2:]
        return self.solution

    def _start(self, C: float) -> probe.Solution | None:
        """The warm start: the last solution, or with two on the path, the line through them
        extended linearly in log C (about halves the Newton iterations along a log grid)."""
        if len(self._path) < 2:
            return self.solution
        (c0, s0), (c1, s1) = self._path
        t = math.log(C / c1) / math.log(c1 / c0)
        return dataclasses.replace(s1, W=s1.W + t * (s1.W - s0.W), b=s1.b + t * (s1.b - s0.b))

    def transform(self, X: np.ndarray) -> torch.Tensor:
        """Rows standardised and projected like the training rows (do it once per evaluation set)."""
        return torch.from_numpy(self.prep.transform(X))

    def predict(self, Z: torch.Tensor) -> np.ndarray:
        scores = self.problem.scores(Z, self.solution)
        return self.classes[scores.argmax(1).cpu().numpy()]

    def original_space_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """``(W [classes, d], b [classes])`` on raw features, as :func:`original_space_weights`."""
        W = self.prep.standardised_weights(self.solution.W.cpu().numpy().astype(np.float64)).T / self.prep.scale_
        return W, self.solution.b.cpu().numpy().astype(np.float64) - W @ self.prep.mean_

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        return self.problem.scores(self.transform(X), self.solution).cpu().numpy()


def _fold_scores(X, y, train, valid, c_grid, st: _Settings) -> tuple[list[float], bool]:
    """Validation accuracy at every C of ``c_grid`` (walked small to large, warm-started), and
    whether every fit converged."""
    scores, converged = {}, True
    if st.solver == "torch":
        path = _TorchPath(X[train], y[train], st)
        Z_valid = path.transform(X[valid])
        for C in sorted(c_grid):
            converged &= path.fit(C).converged
            scores[C] = float(np.mean(path.predict(Z_valid) == y[valid]))  # accuracy (sklearn's check costs more)
        return [scores[C] for C in c_grid], converged
    prep = make_pipeline(StandardScaler(), RowSpan()).fit(X[train])
    Z_train, Z_valid = (prep.transform(X[rows]).astype(st.sklearn_dtype) for rows in (train, valid))
    model = make_classifier(st.kind, seed=st.seed, warm_start=True, tol=st.tol, max_iter=st.max_iter)
    for C in sorted(c_grid):  # small C first: each fit starts from the smoother previous solution
        model.set_params(C=C).fit(Z_train, y[train])
        converged &= _sklearn_iterations(model) < st.max_iter
        scores[C] = float(np.mean(model.predict(Z_valid) == y[valid]))
    return [scores[C] for C in c_grid], converged


def _sklearn_iterations(model) -> int:
    """Iterations of an iterative scikit-learn model (0 for one without, e.g. nearest neighbour)."""
    n_iter = getattr(model, "n_iter_", None)
    return 0 if n_iter is None else int(np.max(n_iter))


def fit_evaluate(X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, y_test: np.ndarray,
                 kind: str = "logreg", seed: int = 0, c_grid: tuple[float, ...] = C_GRID,
                 folds: int = 3, n_jobs: int = 1, solver: str = "torch", tol: float | None = None,
                 max_iter: int | None = None, device: str = "cpu") -> Evaluation:
    """Choose C by stratified CV on the training split, refit on all of it, score the test split.

    Ties in CV accuracy go to the first C of ``c_grid`` (as in scikit-learn's GridSearchCV).
    ``tol``/``max_iter`` default to the solver's own (torch: ``probe.DEFAULT_TOL``; sklearn: the
    settings featbench always used). ``device`` (torch solver): cpu, cuda, cuda:N or auto.
    """
    start = time.perf_counter()
    make_classifier(kind)  # unknown kind: fail before any work
    if solver not in SOLVERS:
        raise FeatbenchError(f"unknown solver '{solver}'; known: {', '.join(SOLVERS)}")
    meta = CLASSIFIERS.entry(kind).meta
    if "probe_loss" not in meta:  # no torch version of this model: scikit-learn's
        solver = "sklearn"
    default_tol, default_max_iter = ((probe.DEFAULT_TOL, probe.DEFAULT_MAX_ITER) if solver == "torch"
                                     else meta.get("sklearn_defaults", (None, None)))
    st = _Settings(kind, solver, default_tol if tol is None else tol, max_iter or default_max_iter, seed, device)
    X_train = np.asarray(X_train, dtype=np.float32)
    y_train = np.asarray(y_train)
    _, counts = np.unique(y_train, return_counts=True)
    n_splits = int(min(folds, counts.min()))
    converged = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if not meta.get("tunes_c", True):  # nothing to choose
            C, cv_score = float("nan"), float("nan")
        elif n_splits >= 2 and len(c_grid) > 1:
            cv = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
            per_fold = Parallel(n_jobs=n_jobs)(
                delayed(_fold_scores)(X_train, y_train, tr, va, c_grid, st) for tr, va in cv.split(X_train, y_train))
            mean = np.mean([scores for scores, _ in per_fold], axis=0)
            converged = all(ok for _, ok in per_fold)
            best = int(np.argmax(mean))
            C, cv_score = float(c_grid[best]), float(mean[best])
        else:  # too few images per class to cross-validate: the middle of the grid, recorded as such
            C, cv_score = float(c_grid[len(c_grid) // 2]), float("nan")
        X_test = np.asarray(X_test, dtype=np.float32)
        if solver == "torch":
            path = model = _TorchPath(X_train, y_train, st)
            final = path.fit(C, warm=False)
            n_iter, converged = final.n_iter, converged and final.converged
            y_pred = path.predict(path.transform(X_test))
        else:
            model = make_pipeline_for(kind, C=C, seed=seed, tol=st.tol, max_iter=st.max_iter)
            model.fit(X_train.astype(st.sklearn_dtype), y_train)
            n_iter = _sklearn_iterations(model[-1])
            converged = converged and (st.max_iter is None or n_iter < st.max_iter)
            y_pred = model.predict(X_test.astype(st.sklearn_dtype))
    return Evaluation(classifier=kind, C=C, cv_score=cv_score,
                      top1=float(accuracy_score(y_test, y_pred)),
                      mean_class_acc=float(balanced_accuracy_score(y_test, y_pred)),
                      fit_s=time.perf_counter() - start, y_pred=y_pred,
                      solver=solver, tol=st.tol, max_iter=st.max_iter, n_iter=n_iter, converged=bool(converged), model=model)
