"""featbench.testing.check_extractor on every registered extractor (fast settings), on the plugin
example, and on extractors that break one rule each (the check must catch them)."""
from __future__ import annotations

import numpy as np
import pytest

from featbench.features import Extractor, available
from featbench.testing import ContractError, check_extractor

from helpers import FAST_SPECS, NOT_FROM_PIXELS
from plugin_example import MeanColour

@pytest.mark.parametrize("name", sorted(available()))
def test_every_registered_extractor_keeps_the_contract(name):
    if name in NOT_FROM_PIXELS:
        pytest.skip(NOT_FROM_PIXELS[name])
    assert name in FAST_SPECS, f"registered extractor '{name}' has no fast spec in tests/helpers.py FAST_SPECS"
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
