"""The runner end to end on real photo patches: results, cache reuse, resume after a kill, bad images."""
import json

import numpy as np
import pandas as pd
import pytest

from featbench.errors import FeatbenchError
from featbench.features.hog import HOG
from featbench.runner import RESULT_COLUMNS, RunOptions, Runner
from featbench.suite import Suite, TaskSpec

from helpers import make_texture_folder


def _suite(extractors=("hog:size=32",), tasks=("textures",), **kw):
    return Suite(name="t", tasks=[TaskSpec(name=t) for t in tasks], extractors=list(extractors), **kw)


def _run(tmp_path, root, name, cache, suite=None, **opts):
    opts.setdefault("batch_size", 4)
    options = RunOptions(out=tmp_path / name, data_roots=[str(root)], cache_dir=str(cache), quiet=True, **opts)
    runner = Runner(suite or _suite(), options, command=["test"])
    runner.run()
    return runner, pd.read_csv(tmp_path / name / "results.csv")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_texture_folder(root / "textures")
    return root


def test_results_table_and_run_json(tmp_path, data_root):
    runner, df = _run(tmp_path, data_root, "out", tmp_path / "cache")
    assert list(df.columns) == RESULT_COLUMNS
    row = df.iloc[0]
    assert (row.task, row.extractor, row.classifier, row.n_train, row.n_test, row.dim) == \
        ("textures", "hog:size=32", "logreg", 18, 18, 3 * 3 * 4 * 9)
    assert 0.0 <= row.top1 <= 1.0 and row.img_per_s > 0
    meta = json.loads((tmp_path / "out" / "run.json").read_text())
    for key in ("command", "seed", "versions", "machine", "git_commit", "extractors", "skipped_images", "tasks"):
        assert key in meta
    assert meta["status"] == "complete"
    assert (tmp_path / "out" / "results.parquet").exists()
    sample = json.loads((tmp_path / "out" / "features-sample" / "sample.json").read_text())
    assert sample["task"] == "textures" and len(sample["labels"]) == 18


def test_second_run_reads_the_cache_and_gives_identical_numbers(tmp_path, data_root):
    cache = tmp_path / "cache"
    _, first = _run(tmp_path, data_root, "a", cache)
    runner, second = _run(tmp_path, data_root, "b", cache)
    assert runner.cache.misses == 0 and runner.cache.hits == 36
    assert (first.img_per_s_source == "measured").all() and (second.img_per_s_source == "cache").all()
    assert second.img_per_s.iloc[0] == pytest.approx(first.img_per_s.iloc[0])  # the speed recorded on computing
    cols = ["top1", "mean_class_acc", "C", "cv_score"]
    pd.testing.assert_frame_equal(first[cols], second[cols])


def test_a_cached_row_found_damaged_when_a_fit_needs_it_is_computed_again(tmp_path, data_root):
    """A re-run lists cached rows from the index and reads them only for a fit that is not cached;
    a row that then fails its digest check is computed again, and the numbers are a fresh run's."""
    cache = tmp_path / "cache"
    _run(tmp_path, data_root, "a", cache, report=False)
    [chunk] = sorted((cache / "chunks").glob("*/*.npy"))
    n_bytes = np.load(chunk).nbytes
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) - n_bytes + 8: len(raw) - n_bytes + 12] = np.float32(1e6).tobytes()  # row 0: finite garbage
    chunk.write_bytes(bytes(raw))
    # another solver: every evaluation is new, so the rows are read and the damage is found
    _, again = _run(tmp_path, data_root, "b", cache, report=False, solver="sklearn")
    assert (again.img_per_s_source == "measured").all()  # the damaged row was computed again
    _, fresh = _run(tmp_path, data_root, "c", tmp_path / "fresh-cache", report=False, solver="sklearn")
    cols = ["top1", "mean_class_acc", "C", "cv_score"]
    pd.testing.assert_frame_equal(again[cols], fresh[cols])
    # the row was stored again, intact: a third fit setting reads every row and computes none
    _, third = _run(tmp_path, data_root, "d", cache, report=False, tol=1e-6)
    assert (third.img_per_s_source == "cache").all()


def test_a_cached_rerun_reads_only_the_feature_rows_of_the_reports_sample(tmp_path, data_root, monkeypatch):
    """With every evaluation cached, the only rows a re-run reads are the test rows the report's
    feature sample keeps (not every row of the task), and the sample is the first run's."""
    from featbench.store import FeatureStore

    cache = tmp_path / "cache"
    _run(tmp_path, data_root, "a", cache)
    read: list[str] = []
    real_get_many = FeatureStore.get_many

    def reading(self, namespace, uids):
        read.extend(uids)
        return real_get_many(self, namespace, uids)

    monkeypatch.setattr(FeatureStore, "get_many", reading)
    _run(tmp_path, data_root, "b", cache)
    first, again = (json.loads((tmp_path / r / "features-sample" / "sample.json").read_text()) for r in "ab")
    assert sorted(read) == sorted(again["uids"]) and len(read) == 18  # the 18 test images of 36
    assert first == again
    [item] = again["features"]
    np.testing.assert_array_equal(np.load(tmp_path / "a" / "features-sample" / item["file"]),
                                  np.load(tmp_path / "b" / "features-sample" / item["file"]))


def test_feature_rows_read_a_subset_and_fall_back_to_every_row_when_one_is_damaged():
    from featbench.feature_rows import FeatureRows

    stored = {u: np.full(3, i, np.float32) for i, u in enumerate("abcd")}
    loads = []

    def load():
        loads.append("all")
        return stored

    def load_some(uids, lose=()):
        loads.append(tuple(uids))
        return {u: stored[u] for u in uids if u not in lose}

    rows = FeatureRows.stored("<f4[3]", dict.fromkeys(stored, b""), load, load_some)
    assert list(rows.some(["c", "a"])) == ["c", "a"] and loads == [("c", "a")] and not rows.read
    damaged = FeatureRows.stored("<f4[3]", dict.fromkeys(stored, b""), load, lambda uids: load_some(uids, lose="a"))
    loads.clear()
    np.testing.assert_array_equal(damaged.some(["a", "b"])["a"], stored["a"])
    assert loads == [("a", "b"), "all"] and damaged.read


def test_changed_config_does_not_reuse_features(tmp_path, data_root):
    cache = tmp_path / "cache"
    _run(tmp_path, data_root, "a", cache)
    runner, _ = _run(tmp_path, data_root, "b", cache, suite=_suite(extractors=["hog:size=32,bins=6"]))
    assert runner.cache.hits == 0


class _Killed(BaseException):
    """Stands in for SIGKILL / Ctrl-C arriving in the middle of extraction."""


def test_killed_run_resumes_and_matches_an_uninterrupted_run(tmp_path, data_root, monkeypatch):
    reference = _run(tmp_path, data_root, "ref", tmp_path / "cache-ref")[1]
    calls = {"n": 0}
    original = HOG.transform_outputs

    def dying(self, images):
        calls["n"] += 1
        if calls["n"] == 3:  # after two batches of 4 were cached
            raise _Killed()
        return original(self, images)

    monkeypatch.setattr(HOG, "transform_outputs", dying)
    with pytest.raises(_Killed):
        _run(tmp_path, data_root, "killed", tmp_path / "cache")
    monkeypatch.setattr(HOG, "transform_outputs", original)
    runner, resumed = _run(tmp_path, data_root, "resumed", tmp_path / "cache")
    assert runner.cache.hits == 8  # the two finished batches were kept
    cols = ["top1", "mean_class_acc", "C", "cv_score"]
    pd.testing.assert_frame_equal(reference[cols], resumed[cols])


def test_bad_image_is_skipped_and_listed(tmp_path):
    root = tmp_path / "data"
    make_texture_folder(root / "textures", bad=True)
    runner, df = _run(tmp_path, root, "out", tmp_path / "cache")
    meta = json.loads((tmp_path / "out" / "run.json").read_text())
    assert [s["relpath"] for s in meta["skipped_images"]] == ["train/brick/zz_truncated.jpg"]
    assert "zz_truncated.jpg" in meta["skipped_images"][0]["reason"]
    assert df.iloc[0].n_train == 18  # the bad image is left out, the other 18 are used


def test_strict_makes_a_bad_image_fatal_but_keeps_finished_work(tmp_path):
    root = tmp_path / "data"
    make_texture_folder(root / "textures", bad=True)
    with pytest.raises(FeatbenchError, match="zz_truncated.jpg"):
        _run(tmp_path, root, "out", tmp_path / "cache", strict=True, batch_size=64)
    from featbench.cache import FeatureCache

    [stats] = FeatureCache(tmp_path / "cache").stats()
    assert stats["entries"] == 36  # every good image of the failing batch was cached before stopping


def test_unknown_task_and_extractor_fail_before_any_work(tmp_path, data_root):
    with pytest.raises(FeatbenchError, match="dataset 'nope' not found"):
        _run(tmp_path, data_root, "o", tmp_path / "c", suite=_suite(tasks=["nope"]))
    with pytest.raises(FeatbenchError, match="unknown extractor 'zzz'"):
        _run(tmp_path, data_root, "o", tmp_path / "c", suite=_suite(extractors=["zzz"]))
    assert not (tmp_path / "o").exists()


def test_features_sample_comes_from_the_task_with_fewest_classes(tmp_path, data_root):
    import shutil

    two = tmp_path / "data2"
    shutil.copytree(data_root / "textures", two / "textures2")
    for split in ("train", "test"):
        shutil.rmtree(two / "textures2" / split / "gravel")
    options = RunOptions(out=tmp_path / "out", data_roots=[str(data_root), str(two)],
                         cache_dir=str(tmp_path / "cache"), quiet=True, batch_size=4)
    Runner(_suite(tasks=("textures", "textures2")), options, command=["test"]).run()
    sample = json.loads((tmp_path / "out" / "features-sample" / "sample.json").read_text())
    assert sample["task"] == "textures2" and len(set(sample["labels"])) == 2


def test_a_sun397_named_folder_is_run_on_its_own_split(tmp_path):
    """The folder's train/test split is used (not SUN-397's partitions), and run.json says so."""
    root = tmp_path / "data"
    make_texture_folder(root / "sun397_textures", per_class=4)
    runner, df = _run(tmp_path, root, "out", tmp_path / "cache", suite=_suite(tasks=("sun397_textures",)))
    info = json.loads((tmp_path / "out" / "run.json").read_text())["tasks"]["sun397_textures"]
    assert info["protocol"].startswith("given") and "own train/test split" in info["protocol_source"]
    assert info["split_sizes"] == [{"train": 12, "test": 12, "target_train": 0}]
    assert info["dataset_info"]["family"] == "scene" and info["dataset_info"]["layout"] == "imagefolder"
    assert set(df["headline_metric"]) == {"mean_class_acc"} and set(df["dataset_layout"]) == {"imagefolder"}
    assert set(df["anchors_key"]) == {"sun397"} and list(df["n_train"]) == [12] and list(df["n_test"]) == [12]
