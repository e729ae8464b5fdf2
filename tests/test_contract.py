"""featbench.testing.check_extractor on every registered extractor (fast settings), on the plugin
example, and on extractors that break one rule each (the check must catch them)."""
from __future__ import annotations

import numpy as np
import pytest

from featbench.features import Extractor, available
from featbench.testing import ContractError, check_extractor

from plugin_example import MeanColour

#: a fast spec for every registered extractor; a newly registered one without an entry fails the test
FAST_SPECS = {
    "hog": "hog:size=32",
    "orb-bow": "orb-bow:k=8",
    "sift-bow": "sift-bow:k=8",
    "sift-vlad": "sift-vlad:k=4",
    "sift-dense-bow": "sift-dense-bow:k=8,step=8",
    "sift-dense-bow-spm": "sift-dense-bow-spm:k=8,step=8",
    "sift-dense-vlad": "sift-dense-vlad:k=4,step=8",
    "sift-dense-fv": "sift-dense-fv:k=4,pca=16,step=8",
    "surf-bow": "surf-bow:k=8",
    "surf-dense-bow": "surf-dense-bow:k=8,step=8",
    "cnn": "cnn:tf_efficientnet_lite0",
}


@pytest.mark.parametrize("name", sorted(available()))
def test_every_registered_extractor_keeps_the_contract(name):
    assert name in FAST_SPECS, f"registered extractor '{name}' has no fast spec in FAST_SPECS"
    summary = check_extractor(FAST_SPECS[name])
    assert summary["passed"] == ["config", "describe", "fit", "output", "per-image", "deterministic", "cache",
                                 "bad image", "degenerate sizes"]
    assert all(d > 0 for d in summary["dims"].values())


def test_a_plugin_class_keeps_the_contract():
    assert check_extractor(MeanColour)["dims"] == {"": 3}


class _Float64(MeanColour):
    name = "float64"

    def transform_outputs(self, images):
        return {"": super().transform_outputs(images)[""].astype(np.float64)}


class _BatchLeak(MeanColour):
    """Normalises by the batch mean: an image's features depend on its batch."""
    name = "batch-leak"

    def transform_outputs(self, images):
        X = super().transform_outputs(images)[""]
        return {"": (X - X.mean(axis=0)).astype(np.float32)}


class _Unstable(MeanColour):
    """Features depend on state that differs between instances (an unseeded draw)."""
    name = "unstable"

    def transform_outputs(self, images):
        X = super().transform_outputs(images)[""]
        return {"": X + np.float32(id(self) % 997)}


class _Tiny(MeanColour):
    """Crashes on a 1-px side, as orb-bow once did."""
    name = "tiny"

    def transform_one(self, image):
        if min(image.shape[:2]) < 2:
            raise ValueError("inv_scale_x > 0")
        return super().transform_one(image)


class _Opaque(MeanColour):
    name = "opaque"

    def describe(self):
        return {**super().describe(), "weights": object()}


@pytest.mark.parametrize("cls,rule", [(_Float64, "output"), (_BatchLeak, "per-image"), (_Unstable, "(fit|deterministic)"),
                                      (_Tiny, "degenerate sizes"), (_Opaque, "describe")])
def test_the_check_catches_a_broken_rule(cls, rule):
    with pytest.raises(ContractError, match=f"^{rule}"):
        check_extractor(cls)
