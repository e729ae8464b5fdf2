"""BatchNorm folding for inference: each eval-mode BatchNorm that only normalises one convolution's
output is folded into that convolution's weights and bias, saving a pass over every feature map.

The arithmetic is torch's own :func:`torch.nn.utils.fusion.fuse_conv_bn_eval` (what
``torch.fx.experimental.optimization.fuse`` calls). That function's graph pass matches only the
exact types ``nn.Conv2d`` -> ``nn.BatchNorm2d``, so it folds neither timm's ``BatchNormAct2d`` (a
BatchNorm with its activation inside one leaf module, as in EfficientNet-Lite) nor a convolution
subclass such as timm's ``Conv2dSame``; :func:`fold_batchnorm` is the same pass over the feature
extraction graph with those cases added. Folded outputs equal the unfolded ones up to float
rounding.

A pair is left alone when folding would change what a caller sees: the convolution's output has
another user besides the BatchNorm (a tapped layer such as ``conv_stem``: its pre-normalisation
output is returned as it is), either module is called at more than one place in the graph, the
BatchNorm keeps no running statistics, or the BatchNorm is a subclass whose forward is not known
here. A tapped BatchNorm (``bn1``) still returns its own output: the folded convolution's, or for
``BatchNormAct2d`` that of its activation.
"""
from __future__ import annotations

import sys
from collections import Counter
from typing import Callable

from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def _after_norm() -> dict[type, Callable[[nn.Module], nn.Module | None]]:
    """BatchNorm types that fold -> what stays in the BatchNorm's place (None: nothing)."""
    kinds: dict[type, Callable[[nn.Module], nn.Module | None]] = {nn.BatchNorm2d: lambda bn: None}
    timm_layers = sys.modules.get("timm.layers")  # a timm module in the graph means timm is imported
    if timm_layers is not None:  # timm's norm+act module runs BatchNorm, then drop, then act
        kinds[timm_layers.BatchNormAct2d] = lambda bn: nn.Sequential(bn.drop, bn.act)
    return kinds


def _set_module(root: nn.Module, target: str, module: nn.Module) -> None:
    parent, _, name = target.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)


def fold_batchnorm(gm: fx.GraphModule) -> tuple[fx.GraphModule, int]:
    """A plain :class:`torch.fx.GraphModule` computing what the eval-mode ``gm`` computes with its
    foldable conv -> BatchNorm pairs folded, and how many were folded. ``gm``'s modules are
    replaced in place (keep a copy when the unfolded network is still needed)."""
    if gm.training:
        raise ValueError("fold_batchnorm: the network must be in eval mode")
    after_norm = _after_norm()
    modules = dict(gm.named_modules())
    calls = Counter(n.target for n in gm.graph.nodes if n.op == "call_module")
    folded = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or type(modules[node.target]) not in after_norm:
            continue
        bn, conv_node = modules[node.target], node.args[0]
        if not (isinstance(conv_node, fx.Node) and conv_node.op == "call_module"
                and isinstance(modules[conv_node.target], nn.Conv2d) and len(conv_node.users) == 1
                and calls[conv_node.target] == 1 and calls[node.target] == 1
                and bn.track_running_stats and bn.running_mean is not None):
            continue
        _set_module(gm, conv_node.target, fuse_conv_bn_eval(modules[conv_node.target], bn))
        rest = after_norm[type(bn)](bn)
        if rest is None:
            node.replace_all_uses_with(conv_node)
            gm.graph.erase_node(node)
        else:
            _set_module(gm, node.target, rest)
        folded += 1
    gm.graph.eliminate_dead_code()
    # one graph (a torchvision DualGraphModule would switch back to its unfolded train graph)
    plain = fx.GraphModule(gm, gm.graph, class_name="FoldedGraphModule")
    return plain.eval(), folded


__all__ = ["fold_batchnorm"]
