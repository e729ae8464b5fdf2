"""What a CNN sees, for the report's gallery: layer activation maps, first-layer filters, CAM material.

:meth:`featbench.features.cnn.CNN.visualise` runs one image through a separately built copy of the
network (fp32, no autocast; the extraction network is left alone) and returns, for every reported
output, its channel-averaged activation map over the crop the network sees. A pooled output
(``pre_logits``: ``[n, c]``) has no map of its own: its map is the last 4-D node before it whose
spatial mean *is* that output (found once by running every node on the first image and comparing),
so the activation map and the class activation map (CAM, Zhou et al. 2016) are exact for
``pool=avg``: the probe's class score is the mean over positions of ``W_c . A(x, y)`` plus its bias.
The deepest output with such a map is also returned whole (``spatial``) for the runner to spread the
fitted probe over (``featbench.gallery``); with ``l2=true``, ``aug=`` or a non-average pool the
score is not a mean over positions and no ``spatial`` is returned.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch


def first_conv_filters(net: torch.nn.Module) -> dict[str, Any]:
    """The first convolution that reads the RGB input: ``{"kind", "filters" [out, 3, k, k], "module"}``."""
    for name, module in net.named_modules():
        if isinstance(module, torch.nn.Conv2d) and module.in_channels == 3:
            return {"kind": "conv-filters", "module": name,
                    "filters": module.weight.detach().float().cpu().numpy()}
    return {}


def position(graph_nodes: list[str], node: str) -> int:
    """Index of a graph node, or of the last node inside a module given by name (``blocks.5``)."""
    if node in graph_nodes:
        return graph_nodes.index(node)
    return max(i for i, n in enumerate(graph_nodes) if n.startswith(node + "."))


def map_nodes(net: torch.nn.Module, graph_nodes: list[str], outputs: dict[str, str], x: torch.Tensor,
              create_fx: Callable) -> dict[str, str]:
    """Output name -> graph node holding its spatial map ``[1, c, h, w]`` (h * w > 1), where one exists."""
    outputs = {o: graph_nodes[position(graph_nodes, n)] for o, n in outputs.items()}  # a module: its last node
    last = max(graph_nodes.index(n) for n in outputs.values())
    every = create_fx(net, return_nodes={n: n for n in graph_nodes[:last + 1]}).eval()
    with torch.inference_mode():
        raw = every(x)
    found = {}
    for out, node in outputs.items():
        t = raw[node]
        if t.ndim == 4 and t.shape[2] * t.shape[3] > 1:
            found[out] = node
            continue
        if t.ndim != 2:
            continue
        for cand in reversed(graph_nodes[:position(graph_nodes, node)]):
            a = raw.get(cand)
            if (isinstance(a, torch.Tensor) and a.ndim == 4 and a.shape[1] == t.shape[1] and a.shape[2] * a.shape[3] > 1
                    and torch.allclose(a.float().mean((2, 3)), t.float(), rtol=1e-4, atol=1e-5)):
                found[out] = cand
                break
    return found


class VisualNet:
    """The network traced to return every reported output's spatial map (see the module docstring)."""

    def __init__(self, net: torch.nn.Module, graph_nodes: list[str], outputs: dict[str, str], create_fx: Callable,
                 normalise: Callable[[np.ndarray], torch.Tensor], probe_ok: bool, sample: torch.Tensor) -> None:
        self.filters = first_conv_filters(net)
        self.normalise = normalise
        self.maps = map_nodes(net, graph_nodes, outputs, sample, create_fx)
        self.order = [o for o in outputs if o in self.maps]
        self.fx = create_fx(net, return_nodes={n: n for n in dict.fromkeys(self.maps.values())}).eval()
        deepest = max(self.order, key=lambda o: position(graph_nodes, self.maps[o]), default=None)
        self.cam_output = deepest if probe_ok else None

    def visualise(self, crop: np.ndarray) -> dict[str, Any]:
        """``crop``: the uint8 ``[c, c, 3]`` view the network sees."""
        with torch.inference_mode():
            raw = self.fx(self.normalise(crop))
        out: dict[str, Any] = {"kind": "cnn", "input": crop, "layers": ",".join(self.order)}
        for o in self.order:
            out[f"map:{o}"] = raw[self.maps[o]][0].float().mean(0).cpu().numpy()
        if self.cam_output is not None:
            out["spatial"] = {self.cam_output: raw[self.maps[self.cam_output]][0].float().cpu().numpy()}
        return out
