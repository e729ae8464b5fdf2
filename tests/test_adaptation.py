"""Domain-adaptation methods: shapes, the properties each paper states, option specs, errors."""
from __future__ import annotations

import numpy as np
import pytest

from featbench import adaptation as A
from featbench.errors import FeatbenchError


def data(ns=60, nt_lab=0, nt=80, d=12, seed=0):
    rng = np.random.default_rng(seed)
    mix_s, mix_t = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    Xs = (rng.normal(size=(ns, d)) @ mix_s + 1.0).astype(np.float32)
    Xt_lab = (rng.normal(size=(nt_lab, d)) @ mix_t - 2.0).astype(np.float32)
    Xt = (rng.normal(size=(nt, d)) @ mix_t - 2.0).astype(np.float32)
    return Xs, rng.integers(0, 3, ns), Xt_lab, rng.integers(0, 3, nt_lab), Xt


def test_registry_and_specs():
    assert {"none", "daume", "coral", "sa"} <= set(A.METHODS)
    assert A.is_method("sa:d=20") and A.is_method("coral:eps=0.5")
    assert not A.is_method("nope") and not A.is_method("sa:d")
    assert A.parse_method("sa:d=20") == ("sa", {"d": 20})
    assert A.parse_method("coral:eps=0.5") == ("coral", {"eps": 0.5})
    assert A.method_options("sa") == {"d": 80, "zscore": True, "space": "subspace"}
    assert A.method_options("coral") == {"eps": 1.0, "zscore": True}
    with pytest.raises(FeatbenchError, match="unknown option"):
        A.apply("sa:k=3", *data())
    with pytest.raises(FeatbenchError, match="unknown adaptation method"):
        A.apply("tca", *data())
    A.check("daume")
    with pytest.raises(FeatbenchError, match="needs labelled target"):
        A.check("daume", has_target_labels=False)
    from featbench.datasets.protocols import make_protocol

    assert make_protocol("source+target").gives_target_labels
    with pytest.raises(FeatbenchError, match="source\\+target"):
        A.check("daume", has_target_labels=make_protocol("source-only-sampled").gives_target_labels)
    A.check("sa:d=10", has_target_labels=False)


def test_none_concatenates_labelled_target():
    Xs, ys, Xl, yl, Xt = data(nt_lab=6)
    X, y, Xtest = A.apply("none", Xs, ys, Xl, yl, Xt)
    assert X.shape == (66, 12) and np.array_equal(y, np.concatenate([ys, yl])) and Xtest is Xt


def test_daume_augments_to_three_blocks():
    Xs, ys, Xl, yl, Xt = data(nt_lab=6)
    X, y, Xtest = A.apply("daume", Xs, ys, Xl, yl, Xt)
    d = Xs.shape[1]
    assert X.shape == (66, 3 * d) and Xtest.shape == (80, 3 * d) and len(y) == 66
    assert np.array_equal(X[:60, :d], Xs) and np.array_equal(X[:60, d:2 * d], Xs) and not X[:60, 2 * d:].any()
    assert np.array_equal(X[60:, :d], Xl) and not X[60:, d:2 * d].any() and np.array_equal(X[60:, 2 * d:], Xl)
    assert np.array_equal(Xtest[:, :d], Xt) and not Xtest[:, d:2 * d].any() and np.array_equal(Xtest[:, 2 * d:], Xt)


def test_daume_without_labelled_target_is_a_clear_error():
    Xs, ys, Xl, yl, Xt = data(nt_lab=0)
    with pytest.raises(FeatbenchError, match="source\\+target"):
        A.apply("daume", Xs, ys, Xl, yl, Xt)


def test_coral_recolours_source_to_target_covariance():
    rng = np.random.default_rng(1)
    d = 8
    Xs = rng.normal(size=(4000, d)) @ rng.normal(size=(d, d))
    Xt = rng.normal(size=(4000, d)) @ rng.normal(size=(d, d)) * 3
    Xs -= Xs.mean(0)
    out = A.coral_transform(Xs, Xt, eps=1e-6)
    assert np.allclose(np.cov(out, rowvar=False), np.cov(Xt, rowvar=False), atol=1e-3 * np.abs(np.cov(Xt, rowvar=False)).max())
    # with the paper's eps=1 the map is (Cs + I)^-1/2 (Ct + I)^1/2 exactly
    Cs, Ct = np.cov(Xs, rowvar=False) + np.eye(d), np.cov(Xt, rowvar=False) + np.eye(d)

    def mpow(C, p):
        w, V = np.linalg.eigh(C)
        return (V * w ** p) @ V.T
    assert np.allclose(A.coral_transform(Xs, Xt, eps=1.0), Xs @ mpow(Cs, -0.5) @ mpow(Ct, 0.5))


def test_coral_method_output_matches_target_statistics():
    Xs, ys, Xl, yl, Xt = data(ns=3000, nt=3000, d=6)
    X, y, Xtest = A.apply("coral:eps=1e-6", Xs, ys, Xl, yl, Xt)
    assert X.shape == Xs.shape and Xtest.shape == Xt.shape and np.array_equal(y, ys)
    assert np.allclose(Xtest.mean(0), 0, atol=1e-4) and np.allclose(Xtest.std(0), 1, atol=1e-3)  # z-scored target
    assert np.allclose(np.cov(X, rowvar=False), np.cov(Xtest, rowvar=False), atol=5e-3)


def test_coral_low_rank_path_is_exact():
    rng = np.random.default_rng(2)
    Xs, Xt = rng.normal(size=(30, 200)), rng.normal(size=(45, 200)) * rng.uniform(0.1, 3, 200)
    Xs[:, 7] = 0.0  # a constant feature, as BoW histograms have
    direct = A.coral_transform(Xs, Xt, eps=1.0, direct=True)
    low = A.coral_transform(Xs, Xt, eps=1.0, direct=False)
    assert np.allclose(direct, low, atol=1e-9)


def test_coral_chooses_the_low_rank_path_for_high_dimensions(monkeypatch):
    Xs, ys, Xl, yl, Xt = data(ns=20, nt_lab=4, nt=25, d=12)
    reference = A.apply("coral", Xs, ys, Xl, yl, Xt)
    monkeypatch.setattr(A, "DIRECT_MAX_DIM", 4)
    called = []
    original = A._eig_cov
    monkeypatch.setattr(A, "_eig_cov", lambda X: called.append(X.shape) or original(X))
    low = A.apply("coral", Xs, ys, Xl, yl, Xt)
    assert called and all(np.allclose(a, b, atol=1e-4) for a, b in zip(reference, low))
    assert low[0].shape == (24, 12) and low[2].shape == (25, 12)


def test_coral_handles_labelled_target():
    Xs, ys, Xl, yl, Xt = data(nt_lab=9)
    X, y, Xtest = A.apply("coral", Xs, ys, Xl, yl, Xt)
    assert X.shape == (69, 12) and np.array_equal(y[60:], yl) and Xtest.shape == (80, 12)
    assert X.dtype == np.float32 and Xtest.dtype == np.float32


def test_subspace_alignment_shapes_and_bases():
    Xs, ys, Xl, yl, Xt = data(ns=60, nt_lab=5, nt=80, d=30)
    X, y, Xtest = A.apply("sa:d=10", Xs, ys, Xl, yl, Xt)
    assert X.shape == (65, 10) and Xtest.shape == (80, 10) and len(y) == 65
    X, _, Xtest = A.apply("sa", Xs, ys, Xl, yl, Xt)  # d=80 capped at the rank: D = 30
    assert X.shape[1] == Xtest.shape[1] == 30
    Ps, Pt, M = A.subspace_alignment_bases(Xs, Xt, 10)
    assert np.allclose(Ps.T @ Ps, np.eye(10)) and np.allclose(Pt.T @ Pt, np.eye(10))
    assert np.allclose(M, Ps.T @ Pt)
    # the aligned basis Ps M is the closest (Frobenius) basis to Pt within span(Ps)
    assert np.linalg.norm(Ps @ M - Pt) <= np.linalg.norm(Ps - Pt) + 1e-12
    assert np.allclose(Ps @ M, Ps @ Ps.T @ Pt)


def test_subspace_alignment_identity_when_domains_agree():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(100, 20)) @ rng.normal(size=(20, 20))
    Ps, Pt, M = A.subspace_alignment_bases(X, X.copy(), 5)
    assert np.allclose(M, np.eye(5), atol=1e-8)
    Xa, _, Xb = A.apply("sa:d=5", X, np.zeros(100, int), np.zeros((0, 20)), np.zeros(0, int), X)
    assert np.allclose(Xa, Xb, atol=1e-4)
    # a sign flip of target axes is undone by M
    Pt_flipped = Pt * np.array([1, -1, 1, -1, 1])
    assert np.allclose((Ps @ (Ps.T @ Pt_flipped)), Pt_flipped, atol=1e-8)


def test_subspace_alignment_high_dimensional_gram_path():
    rng = np.random.default_rng(4)
    Xs, Xt = rng.normal(size=(25, 500)), rng.normal(size=(30, 500))
    P = A.pca_basis(Xs, 10)
    Xc = Xs - Xs.mean(0)
    _, _, Vt = np.linalg.svd(Xc, full_matrices=False)
    assert np.allclose(np.abs(P.T @ Vt[:10].T), np.eye(10), atol=1e-8)  # same directions as a thin SVD
    X, _, Xtest = A.apply("sa:d=100", Xs, np.zeros(25, int), np.zeros((0, 500)), np.zeros(0, int), Xt)
    assert X.shape == (25, 24) and Xtest.shape == (30, 24)  # capped at min(ns, nt) - 1


def test_methods_are_deterministic_and_reject_bad_options():
    args = data(nt_lab=3)
    for m in ("coral", "sa:d=5", "daume"):
        a, b = A.apply(m, *args), A.apply(m, *args)
        assert all(np.array_equal(x, y) for x, y in zip(a, b))
    with pytest.raises(FeatbenchError, match="positive"):
        A.apply("sa:d=0", *args)
    with pytest.raises(FeatbenchError, match="positive"):
        A.apply("coral:eps=0", *args)


def test_sa_feature_space_keeps_distances_and_zscore_false_uses_features_as_given():
    rng = np.random.default_rng(7)
    Xs, Xt = rng.normal(size=(40, 12)), rng.normal(size=(30, 12)) * 2 + 1
    ys = rng.integers(0, 3, 40)
    no_lab = np.zeros((0, 12))
    S1, _, T1 = A.apply("sa:d=5", Xs, ys, no_lab, np.zeros(0, int), Xt)
    S2, _, T2 = A.apply("sa:d=5,space=feature", Xs, ys, no_lab, np.zeros(0, int), Xt)
    assert S1.shape == (40, 5) and S2.shape == (40, 12)
    dist = lambda P, Q: ((P[:, None] - Q[None]) ** 2).sum(-1)
    np.testing.assert_allclose(dist(S1, T1), dist(S2, T2), rtol=1e-4, atol=1e-4)  # 1-NN sees the same
    # zscore=false: SA on the raw features equals SA on features that need no z-scoring
    Ps, Pt, M = A.subspace_alignment_bases(Xs, Xt, 5)
    A3, _, B3 = A.apply("sa:d=5,zscore=false", Xs, ys, no_lab, np.zeros(0, int), Xt)
    np.testing.assert_allclose(A3, Xs @ Ps @ M, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(B3, Xt @ Pt, rtol=1e-4, atol=1e-5)
    C3, _, T3 = A.apply("coral:zscore=false", Xs, ys, no_lab, np.zeros(0, int), Xt)
    np.testing.assert_allclose(C3, A.coral_transform(Xs, Xt), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(T3, Xt, rtol=1e-6)
    with pytest.raises(FeatbenchError, match="space"):
        A.apply("sa:space=other", Xs, ys, no_lab, np.zeros(0, int), Xt)
    with pytest.raises(FeatbenchError, match="zscore must be true or false"):
        A.apply("coral:zscore=2", Xs, ys, no_lab, np.zeros(0, int), Xt)
