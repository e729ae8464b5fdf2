"""Feature cache: hits, invalidation on config/version/fit changes, atomic writes, damage."""
import os

import numpy as np
import pytest

from featbench.atomic import atomic_write_bytes
from featbench.cache import FeatureCache
from featbench.features import create
from featbench.features.hog import HOG


def test_put_get_roundtrip_and_counters(tmp_path):
    cache = FeatureCache(tmp_path)
    vec = np.arange(5, dtype=np.float32)
    assert cache.get("ns", "ab" * 32) is None
    cache.put("ns", "ab" * 32, vec)
    got = cache.get("ns", "ab" * 32)
    np.testing.assert_array_equal(got, vec)
    assert got.dtype == np.float32
    assert (cache.hits, cache.misses) == (1, 1)


def test_disabled_cache_never_hits(tmp_path):
    cache = FeatureCache(tmp_path, enabled=False)
    cache.put("ns", "cd" * 32, np.ones(3))
    assert cache.get("ns", "cd" * 32) is None
    assert not any(tmp_path.iterdir())


def test_no_pickle_objects_are_refused(tmp_path):
    cache = FeatureCache(tmp_path)
    with pytest.raises(ValueError):
        cache.put("ns", "ef" * 32, np.array([{"a": 1}], dtype=object))


def test_atomic_write_leaves_old_file_when_interrupted(tmp_path, monkeypatch):
    target = tmp_path / "x.npy"
    atomic_write_bytes(target, b"old")

    def boom(src, dst):
        raise KeyboardInterrupt  # the process is killed between write and rename

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.npy"]  # no temporary file left behind


def test_cache_key_changes_with_params_version_and_output():
    base = create("hog")
    assert create("hog").cache_key() == base.cache_key()
    assert create("hog:size=64").cache_key() != base.cache_key()
    assert base.cache_key("a") != base.cache_key("b")

    class HOGv2(HOG):
        version = "2"

    assert HOGv2().cache_key() != base.cache_key()


def test_learned_extractor_key_depends_on_training_images():
    class Learned(HOG):
        learns = True

    ex = Learned()
    with pytest.raises(Exception, match="fitted"):
        ex.cache_key()
    ex.fit([], image_ids=["a", "b"], seed=0)
    k1 = ex.cache_key()
    ex.fit([], image_ids=["b", "a"], seed=0)
    assert ex.cache_key() == k1  # order of training images does not matter
    ex.fit([], image_ids=["a", "c"], seed=0)
    assert ex.cache_key() != k1
    ex.fit([], image_ids=["a", "b"], seed=1)
    assert ex.cache_key() != k1
