"""The scratch descriptor store: each image described once per dataset across trials, curve sizes and
extractors on one descriptor stage; identical numbers with and without it; no refit on a cached re-run."""
import json

import numpy as np
import pandas as pd
import pytest

from featbench.features import classical
from featbench.features.descriptor_store import DescriptorStore
from featbench.features.local import LocalFeatures, LocalStage
from featbench.runner import RunOptions, Runner
from featbench.suite import Suite, TaskSpec

from helpers import make_texture_folder

SPECS = ["sift-dense-bow-spm:k=8,step=8", "sift-dense-fv:k=4,pca=16,step=8"]  # one stage, two encodings


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_texture_folder(root / "textures", per_class=8)
    return root


@pytest.fixture
def counted(monkeypatch):
    """Counts the real descriptor computations and fits (the real methods still run)."""
    calls = {"compute": 0, "fit": 0}
    compute, fit = LocalStage.compute, classical.LocalEncodingExtractor.fit

    def counting_compute(self, image):
        calls["compute"] += 1
        return compute(self, image)

    def counting_fit(self, *args, **kwargs):
        calls["fit"] += 1
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(LocalStage, "compute", counting_compute)
    monkeypatch.setattr(classical.LocalEncodingExtractor, "fit", counting_fit)
    return calls


def _run(tmp_path, data_root, name, cache):
    suite = Suite(name="t", tasks=[TaskSpec(name="textures", train_per_class=[2, 4], trials=2)], extractors=SPECS)
    options = RunOptions(out=tmp_path / name, data_roots=[str(data_root)], cache_dir=str(cache), quiet=True,
                         report=False, batch_size=8)
    Runner(suite, options, command=["test"]).run()
    df = pd.read_csv(tmp_path / name / "results.csv").sort_values(["task", "trial", "extractor"], ignore_index=True)
    return df, json.loads((tmp_path / name / "run.json").read_text())


def test_each_image_is_described_once_and_numbers_match_recomputing(tmp_path, data_root, counted, monkeypatch):
    stored, meta = _run(tmp_path, data_root, "stored", tmp_path / "c1")
    n_images = 2 * 3 * 8  # train + test folders, 3 classes, 8 images each
    stores = [meta["tasks"][t]["descriptor_store"] for t in ("textures#n=2", "textures#n=4")]
    # 2 curve sizes x 2 trials x 2 extractors: every image used is described once, then read back
    assert counted["compute"] == sum(s["writes"] for s in stores) <= n_images
    assert all(s["hits"] > 0 and not s["stopped_writing_disk_full"] for s in stores)
    assert counted["fit"] == 8
    assert not any((tmp_path / "c1" / "scratch").iterdir())  # deleted when the run ended

    counted["compute"] = counted["fit"] = 0
    monkeypatch.setenv("FEATBENCH_SCRATCH", str(tmp_path / "not-a-folder.txt"))
    (tmp_path / "not-a-folder.txt").write_text("a file where the scratch folder should be")
    recomputed, meta = _run(tmp_path, data_root, "recomputed", tmp_path / "c2")
    assert "error" in meta["tasks"]["textures#n=2"]["descriptor_store"]
    assert counted["compute"] > 2 * n_images  # every size, trial and extractor describes again
    cols = ["task", "trial", "extractor", "top1", "mean_class_acc", "C", "cv_score"]
    pd.testing.assert_frame_equal(stored[cols], recomputed[cols])


def test_a_cached_rerun_skips_the_fits(tmp_path, data_root, counted):
    first, _ = _run(tmp_path, data_root, "a", tmp_path / "cache")
    counted["compute"] = counted["fit"] = 0
    second, _ = _run(tmp_path, data_root, "b", tmp_path / "cache")
    assert counted == {"compute": 0, "fit": 0}
    assert (second.extract_s == 0).all()
    cols = ["task", "trial", "extractor", "top1", "mean_class_acc", "C", "cv_score"]
    pd.testing.assert_frame_equal(first[cols], second[cols])


def _features(n=50, d=128, seed=0):
    rng = np.random.default_rng(seed)
    return LocalFeatures(rng.random((n, 2), dtype=np.float32), rng.random((n, d)).astype(np.float16))


def test_store_round_trip_is_exact_and_damage_is_a_miss(tmp_path):
    store = DescriptorStore(tmp_path / "s", min_free_bytes=0)
    feats = _features()
    assert store.put("stage", "px:abc", feats)
    got = store.get("stage", "px:abc")
    assert got.xy.dtype == np.float32 and got.desc.dtype == np.float16
    np.testing.assert_array_equal(got.xy, feats.xy)
    np.testing.assert_array_equal(got.desc, feats.desc)
    assert store.get("other-stage", "px:abc") is None
    got.desc[0, 0] = 1  # writable, as the encoders may expect
    path = next((tmp_path / "s").rglob("*.fbd"))
    path.write_bytes(path.read_bytes()[:100])  # truncated
    assert store.get("stage", "px:abc") is None
    path.write_bytes(b"\x93NUMPY" + bytes(200))  # a foreign file
    assert store.get("stage", "px:abc") is None
    assert (store.hits, store.misses, store.writes) == (1, 3, 1)
    store.clear()
    assert not (tmp_path / "s").exists()


def test_an_image_without_descriptors_round_trips(tmp_path):
    store = DescriptorStore(tmp_path / "s", min_free_bytes=0)
    empty = LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 64), np.float16))
    assert store.put("stage", "blank", empty)
    got = store.get("stage", "blank")
    assert got.xy.shape == (0, 2) and got.desc.shape == (0, 64) and got.desc.dtype == np.float16


def test_many_threads_read_the_store_at_once(tmp_path):
    """Describing threads read concurrently; on CPython 3.11 ``np.load`` failed there at random
    (its header parser, ``ast.literal_eval``, raised SystemError when threads overlapped)."""
    from concurrent.futures import ThreadPoolExecutor

    store = DescriptorStore(tmp_path / "s", min_free_bytes=0)
    originals = {f"k{i}": _features(n=20 + i, d=64, seed=i) for i in range(16)}
    for key, feats in originals.items():
        store.put("stage", key, feats)
    keys = list(originals) * 50
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda k: store.get("stage", k), keys))
    for key, feats in zip(keys, got):
        np.testing.assert_array_equal(feats.desc, originals[key].desc)
    assert store.hits == len(keys) and store.misses == 0


def test_store_stops_writing_when_the_disk_runs_short(tmp_path):
    store = DescriptorStore(tmp_path / "s", min_free_bytes=1 << 62)  # more than any disk has free
    assert not store.put("stage", "k", _features())
    assert store.full and store.get("stage", "k") is None
    assert not store.put("stage", "k2", _features())
