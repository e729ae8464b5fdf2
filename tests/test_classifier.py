"""The linear classifier harness: CV of C on the training split only, seeded, correct scores."""
import numpy as np
import pytest

from featbench.classifier import C_GRID, fit_evaluate
from featbench.errors import FeatbenchError


def _blobs(n_per_class=30, d=20, sep=2.0, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(3, d)) * sep
    X = np.concatenate([c + rng.normal(size=(n_per_class, d)) for c in centers]).astype(np.float32)
    y = np.repeat(np.arange(3), n_per_class)
    return X, y


@pytest.mark.parametrize("kind", ["logreg", "svm"])
def test_separable_data_scores_high(kind):
    X, y = _blobs(n_per_class=60)
    ev = fit_evaluate(X[::2], y[::2], X[1::2], y[1::2], kind=kind, seed=0)
    assert ev.top1 > 0.9 and ev.mean_class_acc > 0.9
    assert ev.C in C_GRID


def test_c_is_chosen_by_cross_validation_on_train_only():
    X, y = _blobs(sep=0.6)
    # the test labels are scrambled: if they leaked into the choice of C, the chosen C would move
    Xt, yt = _blobs(sep=0.6, seed=3)
    a = fit_evaluate(X, y, Xt, yt, seed=0)
    b = fit_evaluate(X, y, Xt, np.roll(yt, 7), seed=0)
    assert a.C == b.C and a.cv_score == b.cv_score


def test_grid_matters_the_best_c_wins():
    X, y = _blobs(sep=0.3, n_per_class=40)
    ev = fit_evaluate(X, y, X, y, c_grid=(1e-4, 1e2), seed=0)
    single = [fit_evaluate(X, y, X, y, c_grid=(c,), seed=0) for c in (1e-4, 1e2)]
    assert ev.C in (1e-4, 1e2)
    assert np.isnan(single[0].cv_score)  # one value: no CV, recorded as NaN


def test_deterministic():
    X, y = _blobs(sep=0.5)
    a = fit_evaluate(X, y, X, y, kind="svm", seed=4)
    b = fit_evaluate(X, y, X, y, kind="svm", seed=4)
    assert (a.C, a.top1, a.cv_score) == (b.C, b.top1, b.cv_score)
    np.testing.assert_array_equal(a.y_pred, b.y_pred)


def test_mean_class_accuracy_is_mean_of_recalls():
    X = np.array([[0.0], [0.1], [0.2], [0.3], [5.0], [5.1]] * 3, dtype=np.float32)
    y = np.array([0, 0, 0, 0, 1, 1] * 3)
    Xt = np.array([[0.0], [0.1], [0.2], [5.0]], dtype=np.float32)
    yt = np.array([0, 0, 1, 1])  # one of two class-1 test images is really class-0-like
    ev = fit_evaluate(X, y, Xt, yt, seed=0)
    assert ev.top1 == pytest.approx(0.75)
    assert ev.mean_class_acc == pytest.approx((1.0 + 0.5) / 2)


def test_unknown_classifier():
    X, y = _blobs()
    with pytest.raises(FeatbenchError, match="unknown classifier 'knn'"):
        fit_evaluate(X, y, X, y, kind="knn")


@pytest.mark.parametrize("kind", ["logreg", "svm"])
def test_row_span_projection_changes_nothing_when_d_exceeds_n(kind):
    """Representer theorem: an L2 linear model fitted on the span of the training rows makes the
    same decisions as one fitted in the full space."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from featbench.classifier import RowSpan, make_classifier, make_pipeline_for

    X, y = _blobs(n_per_class=15, d=400, sep=0.15, seed=1)  # 45 rows, 400 dims
    Xt, _ = _blobs(n_per_class=15, d=400, sep=0.15, seed=2)
    projected = make_pipeline_for(kind, C=0.01, seed=0).fit(X, y)
    assert projected[1].components_.shape == (400, 44)  # 45 centred rows span 44 dimensions
    full = make_pipeline(StandardScaler(), make_classifier(kind, C=0.01, seed=0))
    if kind == "logreg":
        full[-1].set_params(tol=1e-8, max_iter=5000)
        projected[-1].set_params(tol=1e-8, max_iter=5000)
        projected.fit(X, y)
    full.fit(X, y)
    np.testing.assert_allclose(projected.decision_function(Xt), full.decision_function(Xt), rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(projected.predict(Xt), full.predict(Xt))


def test_row_span_passes_through_when_n_exceeds_d():
    from featbench.classifier import RowSpan

    X, _ = _blobs(n_per_class=30, d=20)
    span = RowSpan().fit(X)
    assert span.components_ is None
    np.testing.assert_array_equal(span.transform(X), X)


def test_span_features_by_column_blocks_match_scikit_learn():
    """The torch path's standardisation and span projection, computed over column blocks, give
    StandardScaler's mean and scale bit for bit and RowSpan's geometry (inner products of rows)."""
    from sklearn.preprocessing import StandardScaler

    from featbench.classifier import RowSpan, _SpanFeatures

    rng = np.random.default_rng(3)
    X = rng.gamma(0.3, size=(40, 700)).astype(np.float32)
    X[:, 5] = 2.5  # a constant column: scale 1, as scikit-learn sets it
    X_new = rng.gamma(0.3, size=(9, 700)).astype(np.float32)
    scaler = StandardScaler().fit(X)
    span = RowSpan().fit(scaler.transform(X))
    ref_train, ref_new = (span.transform(scaler.transform(A)).astype(np.float64) for A in (X, X_new))
    for block_cols in (64, 700, 5000):
        prep = _SpanFeatures(X, block_cols=block_cols)
        assert np.array_equal(prep.mean_, scaler.mean_) and np.array_equal(prep.scale_, scaler.scale_)
        train, new = prep.train.astype(np.float64), prep.transform(X_new).astype(np.float64)
        np.testing.assert_allclose(new @ train.T, ref_new @ ref_train.T, atol=1e-3)
        np.testing.assert_allclose(train @ train.T, ref_train @ ref_train.T, atol=1e-3)
        W = rng.normal(size=(train.shape[1], 3))  # weights on the span map back to standardised features
        np.testing.assert_allclose(scaler.transform(X_new) @ prep.standardised_weights(W), new @ W, atol=1e-3)
