"""Every registered extractor, built from the registry and run end to end on two small photos.

Not a benchmark: it runs in the default test run, and an exception is a failure. Learned
extractors get a 2-word codebook (and no PCA) so that two images are enough to fit them.
"""
import numpy as np
import pytest
from skimage import data

from featbench.errors import FeatbenchError
from featbench.features.base import EXTRACTORS, create, example_specs, reads_pixels


def _photos() -> list[np.ndarray]:
    return [np.ascontiguousarray(data.astronaut()[::4, ::4]), np.ascontiguousarray(data.coffee()[::4, ::4])]


def _small(spec: str) -> str:
    ex = create(spec)
    small = {"k": 2, "pca": None, "max_side": 96}
    opts = [f"{k}={'none' if v is None else v}" for k, v in small.items() if k in ex.params]
    return spec + ((":" if ":" not in spec else ",") + ",".join(opts) if ex.learns and opts else "")


@pytest.mark.parametrize("name", EXTRACTORS.names())
def test_every_registered_extractor_runs(name):
    spec = _small(example_specs(name)[0])
    ex = create(spec)
    if not reads_pixels(name):  # features read from files (tests/test_precomputed.py): pixels are refused clearly
        with pytest.raises(FeatbenchError, match=name):
            ex.transform_outputs(_photos())
        return
    ex.check()
    ex.configure_runtime("cpu", batch_size=2, num_workers=0)
    images = _photos()
    if ex.learns:
        ex.fit(images, [0, 1], image_ids=["a", "b"], seed=0)
    outs = ex.transform_outputs(images)
    assert list(outs) == ex.outputs
    for feats in outs.values():
        assert feats.dtype == np.float32 and feats.ndim == 2 and feats.shape[0] == 2 and feats.shape[1] > 0
        assert np.isfinite(feats).all()
