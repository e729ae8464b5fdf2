"""BatchNorm folding (``features/cnn_fold.py``, the ``cnn`` extractor's default ``fold_bn=true``):
folded networks give the unfolded features up to float rounding, tapped layers between a
convolution and its BatchNorm keep their own outputs, and pairs that cannot fold are left alone."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torchvision
from torch import fx, nn
from torchvision.models.feature_extraction import create_feature_extractor

from featbench.errors import FeatbenchError
from featbench.features import create
from featbench.features.cnn_fold import fold_batchnorm


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (90, 120, 3), dtype=np.uint8) for _ in range(3)]


def _both(spec: str, images: list[np.ndarray]):
    """(folded extractor, its features, features with ``fold_bn=false``)."""
    folded, plain = create(spec), create(spec + ",fold_bn=false")
    for ex in (folded, plain):
        ex.configure_runtime("cpu", batch_size=4, num_workers=0)
    return folded, folded.transform_outputs(images), plain.transform_outputs(images)


def _max_rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_efficientnet_lite0_folds_with_trained_statistics_and_keeps_tapped_layers(images):
    """Trained BatchNorm statistics (random init would make folding a near no-op). ``conv_stem``
    is tapped, so it keeps its raw output and its BatchNorm (``bn1``) is not folded into it."""
    ex, folded, plain = _both("cnn:tf_efficientnet_lite0@conv_stem+bn1+blocks.3+pre_logits:size=64", images)
    assert ex.describe()["runtime"]["batchnorms_folded"] == 48  # all 49 but bn1
    assert ex.config.key == create(ex.spec + ",fold_bn=false").config.key  # a runtime choice
    for tapped in ("conv_stem", "bn1"):
        assert np.array_equal(folded[tapped], plain[tapped])
    for deeper in ("blocks.3", "pre_logits"):
        assert not np.array_equal(folded[deeper], plain[deeper])  # folding did happen
        assert _max_rel(folded[deeper], plain[deeper]) < 1e-4


def test_a_network_without_batchnorm_is_unchanged(images):
    ex, folded, plain = _both("cnn:squeezenet1_0@pool1+fire9:weights=random,size=64", images)
    assert ex.describe()["runtime"]["batchnorms_folded"] == 0
    assert all(np.array_equal(folded[k], plain[k]) for k in plain)


def _resnet18_graph(taps: list[str]) -> fx.GraphModule:
    """torchvision's ResNet-18 with random BatchNorm statistics and affine terms, as a feature
    extraction graph returning ``taps``."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.2)
    return create_feature_extractor(net.eval(), return_nodes={t: t for t in taps}).eval()


def test_torchvision_batchnorm_folds_and_tapped_nodes_keep_their_values():
    taps = ["conv1", "bn1", "layer1.0.bn2", "layer4"]
    gm = _resnet18_graph(taps)
    folded, count = fold_batchnorm(copy.deepcopy(gm).eval())
    assert count == 19  # 20 BatchNorms; conv1 is tapped, so bn1 stays
    modules = dict(folded.named_modules())
    assert type(modules["bn1"]) is nn.BatchNorm2d and "layer1.0.bn1" not in modules
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        want, got = gm(x), folded(x)
    assert list(got) == taps
    assert torch.equal(got["conv1"], want["conv1"]) and torch.equal(got["bn1"], want["bn1"])
    for name in ("layer1.0.bn2", "layer4"):
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-4)
    assert folded.train().graph is folded.eval().graph  # one graph: training mode cannot unfold it


class _Guarded(nn.Module):
    """Pairs that must not fold: a shared convolution, a BatchNorm without running statistics,
    and a BatchNorm subclass with a forward of its own."""

    class ScaledNorm(nn.BatchNorm2d):
        def forward(self, x):
            return 2 * super().forward(x)

    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Conv2d(3, 3, 1)
        self.bn_a, self.bn_b = nn.BatchNorm2d(3), nn.BatchNorm2d(3)
        self.conv_c, self.bn_c = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3, track_running_stats=False)
        self.conv_d, self.bn_d = nn.Conv2d(3, 3, 1), self.ScaledNorm(3)

    def forward(self, x):
        return self.bn_a(self.shared(x)) + self.bn_b(self.shared(x)) + self.bn_c(self.conv_c(x)) + self.bn_d(self.conv_d(x))


def _trace(module: nn.Module) -> fx.GraphModule:
    """``module`` traced with every BatchNorm (subclasses too) as one call, as timm traces its norm layers."""
    class Tracer(fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return isinstance(m, nn.BatchNorm2d) or super().is_leaf_module(m, qualname)

    return fx.GraphModule(module, Tracer().trace(module))


def test_pairs_that_cannot_fold_are_left_alone():
    gm = _trace(_Guarded().eval())
    x = torch.randn(2, 3, 8, 8)
    want = gm(x)
    folded, count = fold_batchnorm(gm)
    assert count == 0
    torch.testing.assert_close(folded(x), want)
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(_trace(_Guarded().train()))


def test_fold_bn_option_values():
    assert create("cnn:tf_efficientnet_lite0:fold_bn=false").spec == "cnn:tf_efficientnet_lite0:fold_bn=false"
    assert create("cnn:tf_efficientnet_lite0:fold_bn=true").spec == "cnn:tf_efficientnet_lite0"
    with pytest.raises(FeatbenchError, match="fold_bn=maybe"):
        create("cnn:tf_efficientnet_lite0:fold_bn=maybe")
