"""The executor seam without a cluster: fitted extractors travel through Ray's serialiser and
give the same features; options are checked; the suite format carries the executor."""
from __future__ import annotations

import numpy as np
import pytest
import ray.cloudpickle

from featbench.errors import FeatbenchError
from featbench.executor import LocalExecutor, make_executor
from featbench.features import available, create
from featbench.suite import parse_suite


def _images():
    from skimage import data

    photo = data.astronaut()
    return [np.ascontiguousarray(photo[y:y + 96, x:x + 96]) for y in (0, 200, 400) for x in (0, 200, 400)]


@pytest.mark.parametrize("spec", ["hog:size=64", "sift-bow:k=8,max_side=96", "sift-dense-vlad:k=4,max_side=64",
                                  "sift-dense-fv:k=4,pca=8,max_side=64", "surf-bow:k=8,max_side=96",
                                  "orb-bow:k=8,max_side=96", "cnn:tf_efficientnet_lite0:size=64"])
def test_a_used_extractor_travels_to_a_worker_and_gives_the_same_features(spec):
    """What Ray ships to its workers (cloudpickle, in memory only), after fit and a transform
    (so caches such as OpenCV objects, a built network or the descriptor memo exist)."""
    images = _images()
    ex = create(spec)
    ex.configure_runtime(device="cpu", batch_size=4, num_workers=0, threads=1)
    if ex.learns:
        ex.fit(images[:6], image_ids=[str(i) for i in range(6)], seed=0)
    before = ex.transform_outputs(images)
    clone = ray.cloudpickle.loads(ray.cloudpickle.dumps(ex))
    assert clone.cache_key(clone.outputs[0]) == ex.cache_key(ex.outputs[0])
    after = clone.transform_outputs(images)
    for o in before:
        np.testing.assert_allclose(after[o], before[o], rtol=1e-5, atol=1e-6)
        if not ex.uses_torch:
            np.testing.assert_array_equal(after[o], before[o])


def test_every_registered_extractor_is_covered_above():
    covered = {"hog", "sift-bow", "sift-dense-vlad", "sift-dense-fv", "surf-bow", "orb-bow", "cnn"}
    # the rest share the classes above (classical.py: one base class, encoders differ by parameters);
    # precomputed reads published feature files (plain arrays, no OpenCV or torch state)
    assert set(available()) - covered <= {"sift-dense-bow", "sift-dense-bow-spm", "sift-vlad", "surf-dense-bow",
                                          "precomputed"}


def test_local_executor_is_the_extractors_own_batches():
    ex = create("hog:size=32")
    images = _images()
    got = list(LocalExecutor().batches(ex, images, 4))
    assert [idx for idx, _, _ in got] == [[0, 1, 2, 3], [4, 5, 6, 7], [8]]
    np.testing.assert_array_equal(np.concatenate([o[""] for _, o, _ in got]), ex.transform(images))


@pytest.mark.parametrize("args, match", [
    (("spark",), "unknown 'spark'"),
    (("local", "127.0.0.1:6379"), "need --executor ray"),
    (("local", None, 2), "need --executor ray"),
    (("ray", None, 0), "at least 1"),
])
def test_bad_executor_options_are_one_clear_error(args, match):
    with pytest.raises(FeatbenchError, match=match):
        make_executor(*args)


def test_suite_toml_names_the_executor():
    suite = parse_suite({"tasks": ["t"], "extractors": ["hog"], "executor": "ray", "ray_address": "auto",
                         "ray_workers": 4}, "s.toml")
    assert (suite.executor, suite.ray_address, suite.ray_workers) == ("ray", "auto", 4)
    for bad in ({"executor": "spark"}, {"ray_workers": 0}, {"ray_address": 5}):
        with pytest.raises(FeatbenchError, match="s.toml"):
            parse_suite({"tasks": ["t"], "extractors": ["hog"], **bad}, "s.toml")


def test_cli_refuses_ray_options_without_ray(tmp_path):
    from typer.testing import CliRunner

    from featbench.cli import app

    result = CliRunner().invoke(app, ["run", "--extractors", "hog", "--ray-workers", "2", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "need --executor ray" in result.output
