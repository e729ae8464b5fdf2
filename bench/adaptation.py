"""Domain-adaptation methods applied to features before the classifier.

Each method takes the source training features, the labelled target features (empty unless
the protocol gives some, e.g. ``source+target``) and the target test features, and returns
what the classifier is trained and tested on: ``(X_train, y_train, X_test)``. The classifier
then standardises on ``X_train`` as for every task.

A method is named in a suite's ``methods`` list, optionally with options
(``"sa:d=100"``, ``"coral:eps=0.5"``); the full spec string is what the results' ``method``
column records.

* ``none``: the protocol's own training set as is (source-only, or source+target when the
  protocol adds labelled target images).
* ``daume``: frustratingly easy feature augmentation (Daumé III 2007): source rows become
  ``[x, x, 0]``, labelled target rows ``[x, 0, x]``, test rows ``[x, 0, x]`` (3x the dimension).
  It needs labelled target images: with none (``source-only-*`` protocols) it raises a
  :class:`FeatbenchError` rather than silently reducing to source-only.
* ``coral``: CORrelation ALignment (Sun, Feng & Saenko 2016). Each domain is z-scored with its
  own mean and standard deviation (the target's from all its images, labelled and unlabelled;
  constant features keep scale 1), then the source is whitened with its regularised covariance
  and re-coloured with the target's: ``Xs (Cs + eps I)^-1/2 (Ct + eps I)^1/2``, ``eps = 1`` as in
  the paper. The recoloured source plus the labelled target rows are the training set; the test
  rows are the z-scored target test features. Dimension: up to ``DIRECT_MAX_DIM`` (2048) the
  DxD covariances are eigendecomposed directly. Above it (HOG 8100-d, BoW/FV 20k+) the same
  map is computed exactly without any DxD matrix: a centred n x D data matrix spans at most n
  directions, so with ``C = V diag(l) V^T`` from the n x n Gram matrix (``V`` has n columns),
  ``f(C + eps I) = V diag(f(l + eps) - f(eps)) V^T + f(eps) I``; applying that to the source
  costs O(n^2 D) instead of O(D^3) time and O(nD) instead of O(D^2) memory.
* ``sa``: subspace alignment (Fernando et al. 2013). Each domain is z-scored as for CORAL;
  ``Ps``, ``Pt`` are the top ``d`` principal directions (D x d) of source and target (all target
  images, no labels); ``M = Ps^T Pt`` aligns the source basis to the target's; source rows become
  ``Xs Ps M``, target rows (labelled and test) ``Xt Pt``. ``d`` defaults to 80 and is capped at
  the rank available (``min(ns, nt) - 1`` and D). The principal directions come from a thin SVD
  (from the Gram matrix when D > n), with a fixed sign convention so runs repeat exactly.
  ``space="feature"`` returns ``Xs Ps M Pt^T`` and ``Xt Pt Pt^T`` instead (same distances; see
  the function's docstring for why a standardising classifier cares).

CORAL and SA use the unlabelled target test features (transductively, as both papers do),
never their labels. Both take ``zscore=false`` (``"sa:d=80,zscore=false"``) to skip their own
per-domain z-scoring and use the features as given: the published Office-Caltech-10 protocols
z-score each *whole* domain once before the source is sampled (``precomputed:zscore=domain``),
whereas z-scoring a sampled source of 80-200 rows again divides sparse columns by tiny sample
standard deviations.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

import numpy as np

from featbench.errors import FeatbenchError
from featbench.options import parse_options
from featbench.registry import Registry

Method = Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray]]

#: above this many dimensions CORAL uses the exact low-rank (Gram matrix) path
DIRECT_MAX_DIM = 2048


#: name -> method function; ``needs_target_labels`` in each entry's metadata
METHODS: Registry[Method] = Registry("adaptation method", entry_points="featbench.adaptation_methods")


def method(name: str, needs_target_labels: bool = False) -> Callable[[Method], Method]:
    return METHODS.register(name, needs_target_labels=needs_target_labels)


def parse_method(spec: str) -> tuple[str, dict[str, Any]]:
    """``"sa:d=100"`` -> ``("sa", {"d": 100})`` (the option grammar of :mod:`featbench.options`)."""
    name, _, rest = spec.strip().partition(":")
    return name, parse_options(rest, f"adaptation method '{spec}'")


def is_method(spec: object) -> bool:
    """True for a known method name or ``"name:key=value,..."`` spec."""
    if not isinstance(spec, str):
        return False
    try:
        return parse_method(spec)[0] in METHODS
    except FeatbenchError:
        return False


def method_options(name: str) -> dict[str, Any]:
    """A method's options and their defaults."""
    sig = inspect.signature(METHODS.get(name))
    return {p.name: p.default for p in list(sig.parameters.values())[6:]
            if p.kind is p.KEYWORD_ONLY or p.default is not p.empty}


def check(spec: str, has_target_labels: bool | None = None) -> None:
    """Raise a FeatbenchError for an unknown method or option, or (when known) missing target labels."""
    name, opts = parse_method(spec)
    if name not in METHODS:
        raise FeatbenchError(f"unknown adaptation method '{spec}'; known: {', '.join(sorted(METHODS))}")
    known = method_options(name)
    bad = sorted(set(opts) - set(known))
    if bad:
        raise FeatbenchError(f"adaptation method '{name}': unknown option(s) {', '.join(bad)}; "
                             f"known: {', '.join(sorted(known)) or 'none'}")
    if has_target_labels is False and METHODS.entry(name).meta["needs_target_labels"]:
        raise FeatbenchError(f"adaptation method '{name}' needs labelled target images; "
                             "use the 'source+target' protocol")


def apply(name: str, Xs, ys, Xt_lab, yt_lab, Xt_test, seed: int = 0):
    check(name)
    base, opts = parse_method(name)
    return METHODS.get(base)(Xs, ys, Xt_lab, yt_lab, Xt_test, seed=seed, **opts)


# -- helpers -------------------------------------------------------------------------------------

def _f64(X) -> np.ndarray:
    return np.asarray(X, dtype=np.float64)


def _target_all(Xt_lab: np.ndarray, Xt_test: np.ndarray) -> np.ndarray:
    return np.concatenate([Xt_lab, Xt_test]) if len(Xt_lab) else Xt_test


def zscore_fit(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale of each column; constant columns get scale 1."""
    mean = X.mean(axis=0)
    std = X.std(axis=0)
    std[std < 1e-12] = 1.0
    return mean, std


def _zscore_domains(Xs, Xt_lab, Xt_test):
    Xs, Xt_lab, Xt_test = _f64(Xs), _f64(Xt_lab), _f64(Xt_test)
    if Xt_lab.ndim != 2 or Xt_lab.shape[1] != Xs.shape[1]:
        Xt_lab = np.zeros((0, Xs.shape[1]))
    ms, ss = zscore_fit(Xs)
    mt, st = zscore_fit(_target_all(Xt_lab, Xt_test))
    return (Xs - ms) / ss, (Xt_lab - mt) / st, (Xt_test - mt) / st


def _out(X_train, y_train, X_test):
    return (np.ascontiguousarray(X_train, dtype=np.float32), np.asarray(y_train, dtype=np.int64),
            np.ascontiguousarray(X_test, dtype=np.float32))


def _eig_cov(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues and eigenvectors (columns) of the covariance of ``X`` with non-zero eigenvalue.

    From the n x n Gram matrix of the centred data when D > n, from the D x D covariance otherwise.
    """
    n, d = X.shape
    Xc = X - X.mean(axis=0)
    denom = max(n - 1, 1)
    if d <= n:
        lam, V = np.linalg.eigh(Xc.T @ Xc / denom)
    else:
        s2, U = np.linalg.eigh(Xc @ Xc.T)
        keep = s2 > max(s2.max(initial=0.0), 0.0) * 1e-10
        s2, U = s2[keep], U[:, keep]
        V = (Xc.T @ U) / np.sqrt(s2)
        lam = s2 / denom
    keep = lam > max(lam.max(initial=0.0), 0.0) * 1e-10
    return lam[keep], V[:, keep]


def _apply_matrix_function(Y: np.ndarray, lam: np.ndarray, V: np.ndarray, eps: float,
                           power: float) -> np.ndarray:
    """``Y (V diag(lam) V^T + eps I)^power`` with V orthonormal columns (V V^T a projector)."""
    f = (lam + eps) ** power - eps ** power
    return (Y @ V) * f @ V.T + (eps ** power) * Y


def coral_transform(Xs: np.ndarray, Xt: np.ndarray, eps: float = 1.0, direct: bool | None = None) -> np.ndarray:
    """``Xs (Cs + eps I)^-1/2 (Ct + eps I)^1/2`` (Sun et al. 2016), exact on both paths."""
    Xs, Xt = _f64(Xs), _f64(Xt)
    d = Xs.shape[1]
    if direct is None:
        direct = d <= DIRECT_MAX_DIM
    if direct:
        def mpow(X, p):
            C = np.cov(X, rowvar=False).reshape(d, d) + eps * np.eye(d)
            w, V = np.linalg.eigh(C)
            return (V * np.clip(w, eps * 1e-6, None) ** p) @ V.T
        return Xs @ mpow(Xs, -0.5) @ mpow(Xt, 0.5)
    lam_s, Vs = _eig_cov(Xs)
    lam_t, Vt = _eig_cov(Xt)
    A = _apply_matrix_function(Xs, lam_s, Vs, eps, -0.5)
    return _apply_matrix_function(A, lam_t, Vt, eps, 0.5)


def pca_basis(X: np.ndarray, k: int) -> np.ndarray:
    """Top-``k`` principal directions (D x k, orthonormal) of ``X``, signs fixed (largest entry > 0)."""
    Xc = _f64(X) - _f64(X).mean(axis=0)
    n, d = Xc.shape
    if d > n:
        s2, U = np.linalg.eigh(Xc @ Xc.T)
        order = np.argsort(s2)[::-1][:k]
        s2, U = np.clip(s2[order], 1e-300, None), U[:, order]
        P = (Xc.T @ U) / np.sqrt(s2)
    else:
        w, V = np.linalg.eigh(Xc.T @ Xc)
        P = V[:, np.argsort(w)[::-1][:k]]
    signs = np.sign(P[np.abs(P).argmax(axis=0), np.arange(P.shape[1])])
    signs[signs == 0] = 1.0
    return P * signs


def subspace_alignment_bases(Xs: np.ndarray, Xt: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Ps, Pt, M = Ps^T Pt) for ``d`` dimensions, capped at the rank available."""
    k = int(min(d, len(Xs) - 1, len(Xt) - 1, Xs.shape[1]))
    if k < 1:
        raise FeatbenchError(f"subspace alignment needs at least 2 source and 2 target images (got {len(Xs)}, {len(Xt)})")
    Ps, Pt = pca_basis(Xs, k), pca_basis(Xt, k)
    return Ps, Pt, Ps.T @ Pt


# -- methods -------------------------------------------------------------------------------------

@method("none")
def no_adaptation(Xs, ys, Xt_lab, yt_lab, Xt_test, seed=0):
    """The protocol's own training set as is (source-only, or source+target)."""
    return np.concatenate([Xs, Xt_lab]), np.concatenate([ys, yt_lab]), Xt_test


@method("daume", needs_target_labels=True)
def feature_augmentation(Xs, ys, Xt_lab, yt_lab, Xt_test, seed=0):
    """Daumé III (2007): source [x, x, 0], target [x, 0, x]."""
    if len(Xt_lab) == 0:
        raise FeatbenchError("adaptation method 'daume' (feature augmentation) needs labelled target images, "
                             "and this protocol gives none; use protocol 'source+target'")
    Xs, Xt_lab, Xt_test = (np.asarray(X, dtype=np.float32) for X in (Xs, Xt_lab, Xt_test))

    def aug(X, source: bool):
        zero = np.zeros_like(X)
        return np.hstack([X, X, zero] if source else [X, zero, X])

    X_train = np.vstack([aug(Xs, True), aug(Xt_lab, False)])
    return _out(X_train, np.concatenate([ys, yt_lab]), aug(Xt_test, False))


def _domains(Xs, Xt_lab, Xt_test, zscore, name):
    """Per-domain z-scoring (the default), or the features as given (``zscore=false``: the published
    protocols z-score every whole domain before the source is sampled; see ``precomputed:zscore=domain``)."""
    if not isinstance(zscore, bool):
        raise FeatbenchError(f"{name}: zscore must be true or false, not {zscore!r}")
    if zscore:
        return _zscore_domains(Xs, Xt_lab, Xt_test)
    Xs, Xt_lab, Xt_test = _f64(Xs), _f64(Xt_lab), _f64(Xt_test)
    if Xt_lab.ndim != 2 or Xt_lab.shape[1] != Xs.shape[1]:
        Xt_lab = np.zeros((0, Xs.shape[1]))
    return Xs, Xt_lab, Xt_test


@method("coral")
def coral(Xs, ys, Xt_lab, yt_lab, Xt_test, seed=0, eps=1.0, zscore=True):
    """Sun et al. (2016) on per-domain z-scored features; eps=1 as in the paper."""
    if not float(eps) > 0:
        raise FeatbenchError(f"coral: eps must be positive, not {eps}")
    Zs, Zt_lab, Zt_test = _domains(Xs, Xt_lab, Xt_test, zscore, "coral")
    Zs = coral_transform(Zs, _target_all(Zt_lab, Zt_test), eps=float(eps))
    return _out(np.concatenate([Zs, Zt_lab]), np.concatenate([ys, yt_lab]), Zt_test)


@method("sa")
def subspace_alignment(Xs, ys, Xt_lab, yt_lab, Xt_test, seed=0, d=80, zscore=True, space="subspace"):
    """Fernando et al. (2013): source Xs Ps Ps^T Pt, target Xt Pt, d principal directions each.

    ``space="feature"`` maps both back with ``Pt^T`` (rank-d rows in the original D dimensions):
    Euclidean distances, hence 1-NN, are unchanged, but a classifier that standardises each input
    column no longer rescales every aligned direction to unit variance (which gives the weak,
    least-aligned tail directions as much weight as the leading ones).
    """
    if isinstance(d, bool) or not isinstance(d, int) or d < 1:
        raise FeatbenchError(f"sa: d must be a positive integer, not {d!r}")
    if space not in ("subspace", "feature"):
        raise FeatbenchError(f"sa: space must be 'subspace' or 'feature', not {space!r}")
    Zs, Zt_lab, Zt_test = _domains(Xs, Xt_lab, Xt_test, zscore, "sa")
    Ps, Pt, M = subspace_alignment_bases(Zs, _target_all(Zt_lab, Zt_test), d)
    back = Pt.T if space == "feature" else np.eye(Pt.shape[1])
    return _out(np.concatenate([Zs @ Ps @ M @ back, Zt_lab @ Pt @ back]), np.concatenate([ys, yt_lab]),
                Zt_test @ Pt @ back)
