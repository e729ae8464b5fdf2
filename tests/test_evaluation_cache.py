"""The evaluation cache: a re-run on unchanged features, labels and settings reads each evaluation
back instead of fitting it again, with the same numbers; anything that could change a number is a
new key; damaged entries are misses; an unwritable cache never stops a run."""
import json

import numpy as np
import pandas as pd
import pytest

import featbench.runner as runner_module
from featbench.classifier import fit_evaluate, original_space_weights
from featbench.evaluation_cache import EvaluationCache, evaluation_key, inputs_digest
from featbench.store import row_digest
from featbench.runner import RunOptions, Runner
from featbench.suite import Suite, TaskSpec

from helpers import make_texture_folder

SETTINGS = dict(kind="logreg", seed=0, solver="torch", tol=None, max_iter=None, device="cpu")


def _data(seed=0, n=40, d=6, k=3):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    X = (rng.normal(size=(n, d)) + y[:, None]).astype(np.float32)
    return X[:30], y[:30], X[30:], y[30:]


def _inputs(X, y, Xt, yt):
    """The digest the runner builds from the feature store's row digests, here from the rows."""
    return inputs_digest(f"{X.dtype.str}[{X.shape[1]}]", [("train", [row_digest(r) for r in X], y),
                                                          ("target_train", [], np.zeros(0, np.int64)),
                                                          ("test", [row_digest(r) for r in Xt], yt)])


def _key(X, y, Xt, yt, method="none", **changes):
    return evaluation_key(method, _inputs(X, y, Xt, yt), {**SETTINGS, **changes})


def test_the_key_follows_every_input_that_can_change_a_number():
    X, y, Xt, yt = _data()
    key = _key(X, y, Xt, yt)
    assert key == _key(X.copy(), y.copy(), Xt.copy(), yt.copy())
    assert key == _key(X, y, Xt, yt, n_jobs=2)  # workers do not change a number
    X2 = X.copy()
    X2[3, 2] = np.nextafter(X2[3, 2], np.float32(np.inf))  # one float32 step in one entry
    y2 = y.copy()
    y2[[0, 1]] = y2[[1, 0]]
    others = {_key(X2, y, Xt, yt), _key(X, y2, Xt, yt), _key(X, y, Xt[:-1], yt[:-1]), _key(X, y, Xt, yt, seed=1),
              _key(X, y, Xt, yt, kind="svm"), _key(X, y, Xt, yt, tol=1e-6), _key(X, y, Xt, yt, solver="sklearn"),
              _key(X, y, Xt, yt, device="cuda"), _key(X.astype(np.float64), y, Xt, yt),
              _key(X, y, Xt, yt, method="coral"), _key(X[::-1], y[::-1], Xt, yt), _key(X, y, Xt[:, :-1], yt)}
    assert key not in others and len(others) == 12


def test_an_entry_reads_back_exactly_and_damage_is_a_miss(tmp_path):
    X, y, Xt, yt = _data()
    ev = fit_evaluate(X, y, Xt, yt, **SETTINGS)
    cache = EvaluationCache(tmp_path / "ev")
    key = _key(X, y, Xt, yt)
    assert cache.get(key, len(Xt)) is None
    cache.put(key, ev, X.shape)
    got, shape = cache.get(key, len(Xt))
    assert shape == X.shape
    for field in ("classifier", "C", "cv_score", "top1", "mean_class_acc", "fit_s", "solver", "tol", "max_iter",
                  "n_iter", "converged"):
        assert getattr(got, field) == getattr(ev, field), field
    np.testing.assert_array_equal(got.y_pred, ev.y_pred)
    assert got.model is None
    assert cache.get(key, len(Xt), with_weights=True) is None  # no weights were kept with it
    W, b = original_space_weights(ev.model)
    cache.put(key, ev, X.shape, weights=(W, b))
    model = cache.get(key, len(Xt), with_weights=True)[0].model
    np.testing.assert_array_equal(original_space_weights(model)[0], W)
    np.testing.assert_array_equal(original_space_weights(model)[1], b)
    assert cache.get(key, len(Xt) + 1) is None  # predictions of another length: not this evaluation
    path = next((tmp_path / "ev").rglob("*.json"))
    path.write_text(path.read_text()[:40])
    assert cache.get(key, len(Xt)) is None
    assert cache.counts() == {"hits": 2, "misses": 4, "writes": 2}


def test_a_cache_that_cannot_be_written_warns_once_and_stays_out_of_the_way(tmp_path, capsys):
    X, y, Xt, yt = _data()
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cache = EvaluationCache(blocker / "ev")
    ev = fit_evaluate(X, y, Xt, yt, **SETTINGS)
    cache.put(_key(X, y, Xt, yt), ev, X.shape)
    cache.put(_key(X, y, Xt, yt, seed=1), ev, X.shape)
    assert capsys.readouterr().err.count("continuing without the evaluation cache") == 1
    assert not cache.enabled and cache.get(_key(X, y, Xt, yt), len(Xt)) is None


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_texture_folder(root / "textures", per_class=8)
    return root


def _run(tmp_path, data_root, name, cache, fits, use_cache=True, extractors=("hog:size=32,cell=8",)):
    suite = Suite(name="t", tasks=[TaskSpec(name="textures", train_per_class=[3], trials=2)],
                  extractors=list(extractors))
    options = RunOptions(out=tmp_path / name, data_roots=[str(data_root)], cache_dir=str(cache), quiet=True,
                         report=False, use_cache=use_cache)
    before = fits["n"]
    Runner(suite, options, command=["test"]).run()
    df = pd.read_csv(tmp_path / name / "results.csv").sort_values(["trial", "extractor"], ignore_index=True)
    meta = json.loads((tmp_path / name / "run.json").read_text())
    return df, meta, fits["n"] - before


@pytest.fixture
def fits(monkeypatch):
    calls = {"n": 0}

    def counting(*args, **kwargs):
        calls["n"] += 1
        return fit_evaluate(*args, **kwargs)

    monkeypatch.setattr(runner_module, "fit_evaluate", counting)
    return calls


def test_a_rerun_reads_every_evaluation_back_with_the_same_numbers(tmp_path, data_root, fits):
    first, _, n_first = _run(tmp_path, data_root, "first", tmp_path / "cache", fits)
    again, meta, n_again = _run(tmp_path, data_root, "again", tmp_path / "cache", fits)
    assert n_first == len(first) == 2 and n_again == 0
    assert not first["fit_reused"].any() and again["fit_reused"].all()
    cols = ["trial", "extractor", "C", "cv_score", "top1", "mean_class_acc", "fit_s", "n_iter", "converged"]
    pd.testing.assert_frame_equal(first[cols], again[cols])
    key = next(k for k in meta["tasks"] if k.startswith("textures"))
    assert meta["tasks"][key]["evaluation_cache"] == {"hits": 2, "misses": 0, "writes": 0}
    # a new extractor beside the old one: only its evaluations are fitted
    _, _, n_added = _run(tmp_path, data_root, "added", tmp_path / "cache", fits,
                         extractors=("hog:size=32,cell=8", "hog:size=32,cell=16"))
    assert n_added == 2
    # cache info counts them; cache clear deletes them with the features
    from typer.testing import CliRunner

    from featbench.cli import app
    info = CliRunner().invoke(app, ["cache", "info", "--cache-dir", str(tmp_path / "cache")])
    assert info.exit_code == 0 and "evaluations/  4 classifier evaluations" in info.output
    # --no-cache fits everything again
    fresh, _, n_fresh = _run(tmp_path, data_root, "fresh", tmp_path / "cache", fits, use_cache=False)
    assert n_fresh == 2 and not fresh["fit_reused"].any()


def _evaluation_inputs(X, y, Xt, yt):
    from types import SimpleNamespace

    from featbench.feature_rows import EvaluationInputs, FeatureRows

    train = [SimpleNamespace(uid=f"train{i}", label=int(c)) for i, c in enumerate(y)]
    test = [SimpleNamespace(uid=f"test{i}", label=int(c)) for i, c in enumerate(yt)]
    rows = FeatureRows.computed({**{r.uid: x for r, x in zip(train, X)}, **{r.uid: x for r, x in zip(test, Xt)}})
    inputs = EvaluationInputs(rows, {"train": train, "test": test}, {c: c for c in range(3)})
    assert inputs.digest == _inputs(X, y, Xt, yt)  # the same inputs, the same key, whichever way it is built
    return inputs


def test_a_drawn_probe_is_mapped_back_to_raw_features_once(tmp_path, data_root, monkeypatch):
    """For an evaluation the gallery draws, the weights kept in the cache are the ones it draws from:
    the fitted model is replaced by them, so the gallery does not map the probe back a second time."""
    from featbench.classifier import LinearWeights

    calls = {"n": 0}

    def counting(model):
        calls["n"] += 1
        return original_space_weights(model)

    monkeypatch.setattr(runner_module, "original_space_weights", counting)
    X, y, Xt, yt = _data()
    options = RunOptions(out=tmp_path / "out", data_roots=[str(data_root)], cache_dir=str(tmp_path / "cache"),
                         quiet=True, report=False)
    runner = Runner(Suite(name="t", tasks=[TaskSpec(name="textures")], extractors=["hog"]), options, command=["test"])
    adapted = runner_module._Adapted("none", _evaluation_inputs(X, y, Xt, yt), seed=0)
    ev, reused, shape = runner._fit_evaluate(adapted, "logreg", 0, needs_model=True)
    assert shape == X.shape
    assert not reused and calls["n"] == 1 and isinstance(ev.model, LinearWeights)
    W, b = original_space_weights(fit_evaluate(X, y, Xt, yt, **SETTINGS).model)
    np.testing.assert_allclose(ev.model.W, W, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ev.model.b, b, rtol=1e-6, atol=1e-9)
    again, reused, _ = runner._fit_evaluate(adapted, "logreg", 0, needs_model=True)
    assert reused and calls["n"] == 1
    np.testing.assert_array_equal(again.model.W, ev.model.W)
    # without the gallery the fitted model is left as it is
    plain, _, _ = runner._fit_evaluate(runner_module._Adapted("none", _evaluation_inputs(X, y, Xt, yt), seed=1),
                                       "logreg", 1, needs_model=False)
    assert calls["n"] == 1 and not isinstance(plain.model, LinearWeights)


def test_the_code_identity_ignores_docstrings_and_comments_but_not_code():
    from featbench.evaluation_cache import code_of

    base = '"""Module."""\nC = (0.1, 1.0)\n\ndef fit(x):\n    """Fit."""\n    return x * 2\n'
    same = ('"""Module, documented anew."""\n# a comment\nC = (0.1,  1.0)\n\n\ndef fit(x):\n'
            '    """Fit, with more words."""\n    return x * 2  # twice\n')
    assert code_of(base) == code_of(same)
    for changed in (base.replace("0.1", "0.01"), base.replace("x * 2", "x * 3"), base.replace("def fit", "def fit2")):
        assert code_of(changed) != code_of(base)
    assert code_of(base.replace('    """Fit."""\n', "")) == code_of(base)  # a docstring removed: same code


def test_a_rerun_reads_no_feature_row_and_neither_adapts_nor_fits(tmp_path, monkeypatch):
    """Every evaluation is keyed by its adaptation method's inputs, by their feature rows' digests:
    a cached re-run finds them from the store's index, so it reads no row, adapts nothing and fits
    nothing; its records (the adapted dimension included) are the first run's."""
    from featbench.store import FeatureStore
    import scipy.io

    import featbench.adaptation as adaptation

    folder = tmp_path / "data" / "toy_feats"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(3)
    means = rng.normal(scale=4, size=(3, 8))
    for domain, shift, n in (("src", 0.0, 12), ("tgt", 2.0, 9)):
        labels = np.repeat([1, 2, 3], n // 3)
        scipy.io.savemat(folder / f"{domain}.mat",
                         {"feas": means[labels - 1] + rng.normal(size=(len(labels), 8)) + shift, "labels": labels[None, :]})
    (folder / "classes.txt").write_text("alpha\nbeta\ngamma\n")
    calls = []
    real_apply = adaptation.apply

    def counting(name, *args, **kwargs):
        calls.append(name)
        return real_apply(name, *args, **kwargs)

    monkeypatch.setattr(adaptation, "apply", counting)
    real_get_many = FeatureStore.get_many

    def reading(self, namespace, uids):
        calls.append("read")
        return real_get_many(self, namespace, uids)

    monkeypatch.setattr(FeatureStore, "get_many", reading)
    methods = ["none", "sa:d=2,zscore=false", "coral:zscore=false"]
    suite = Suite(name="toy", tasks=[TaskSpec(name="toy_feats:src->tgt", protocol="source-only-full", methods=methods)],
                  extractors=["precomputed"], classifiers=["logreg"])

    def run(name):
        calls.clear()
        options = RunOptions(out=tmp_path / name, data_roots=[str(tmp_path / "data")], cache_dir=str(tmp_path / "cache"),
                             quiet=True, report=False)
        Runner(suite, options, command=["test"]).run()
        return pd.read_csv(tmp_path / name / "results.csv").sort_values("method", ignore_index=True), list(calls)

    first, first_calls = run("first")
    again, again_calls = run("again")
    assert sorted(c for c in first_calls if c != "read") == sorted(methods) and again_calls == []
    assert again["fit_reused"].all() and set(first["dim"]) == {2, 8}
    cols = ["method", "n_train", "n_test", "dim", "C", "top1", "mean_class_acc", "fit_s"]
    pd.testing.assert_frame_equal(first[cols], again[cols])
