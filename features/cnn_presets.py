"""Named layers and layer presets per architecture, after DeCAF's depth study.

A layer token in ``cnn:MODEL@TOKEN[+TOKEN..]`` is, in this order of lookup:

1. a preset of the model (``@depth``), which expands to several tokens;
2. an alias of the model (``pool5``, ``fc6``, ``fc7`` ...), standing for one graph node;
3. ``pre_logits`` (the input of the classifier: the penultimate pooled feature) or ``logits``
   (the class scores), found in the model's graph for any architecture;
4. a node name of ``torchvision.models.feature_extraction.get_graph_node_names``; a module
   name such as ``layer3`` or ``blocks.5`` means the last node inside that module.

The output of a layer keeps the token's name (``fc6`` stays ``fc6`` in results).

Node names below are torchvision's (``alexnet``, ``vgg16``, ``resnet50``, ``mobilenet_v3_large``,
``squeezenet1_0``) and timm's (``tf_efficientnet_lite0/1/2``):

* AlexNet / VGG-16: ``pool5`` is the last max pool (256x6x6 / 512x7x7), ``fc6`` and ``fc7`` the
  first two fully connected layers after their ReLU, as DeCAF's DeCAF5/6/7.
* ResNet-50: ``layer1``..``layer4``, the four residual stages.
* MobileNetV3-Large: the last block of each resolution (strides 2..32), the 960-channel last
  conv, and ``pre_logits`` (the 1280-D hidden layer of the head).
* EfficientNet-Lite0/1/2: the seven block stages ``blocks.0``..``blocks.6`` and ``pre_logits``.
* SqueezeNet 1.0: Caffe's layer names, ``pool1`` (``features.2``), ``pool4`` (the max pool after
  fire4, ``features.6``), ``pool8`` (after fire8, ``features.11``), ``fire9`` (``features.12``)
  and ``conv10`` (the 1000-channel class map, ``classifier.1``).
"""
from __future__ import annotations

import dataclasses

from featbench.errors import FeatbenchError

DEFAULT_LAYER = "pre_logits"


@dataclasses.dataclass(frozen=True)
class ModelLayers:
    aliases: dict[str, str]
    presets: dict[str, tuple[str, ...]]


_EFFICIENTNET_LITE = ModelLayers(
    aliases={},
    presets={"depth": tuple(f"blocks.{i}" for i in range(7)) + ("pre_logits",)},
)

MODEL_LAYERS: dict[str, ModelLayers] = {
    "alexnet": ModelLayers(
        aliases={"pool5": "features.12", "fc6": "classifier.2", "fc7": "classifier.5"},
        presets={"depth": ("pool5", "fc6", "fc7")},
    ),
    "vgg16": ModelLayers(
        aliases={"pool5": "features.30", "fc6": "classifier.1", "fc7": "classifier.4"},
        presets={"depth": ("pool5", "fc6", "fc7")},
    ),
    "resnet50": ModelLayers(
        aliases={},
        presets={"depth": ("layer1", "layer2", "layer3", "layer4")},
    ),
    "mobilenet_v3_large": ModelLayers(
        aliases={},
        presets={"depth": ("features.1", "features.3", "features.6", "features.12", "features.15",
                           "features.16", "pre_logits")},
    ),
    "squeezenet1_0": ModelLayers(
        aliases={"pool1": "features.2", "pool4": "features.6", "pool8": "features.11",
                 "fire9": "features.12", "conv10": "classifier.1"},
        presets={"depth": ("pool1", "pool4", "pool8", "fire9")},
    ),
    "tf_efficientnet_lite0": _EFFICIENTNET_LITE,
    "tf_efficientnet_lite1": _EFFICIENTNET_LITE,
    "tf_efficientnet_lite2": _EFFICIENTNET_LITE,
}


def model_layers(model: str) -> ModelLayers:
    """Aliases and presets of ``model`` (a timm ``arch.tag`` name shares its arch's table)."""
    return MODEL_LAYERS.get(model) or MODEL_LAYERS.get(model.split(".")[0]) or ModelLayers({}, {})


def expand_layers(model: str, tokens: tuple[str, ...] | list[str] | None) -> list[str]:
    """Output names for the requested tokens: presets expanded, duplicates dropped, order kept."""
    table = model_layers(model)
    known_presets = {name for t in MODEL_LAYERS.values() for name in t.presets}
    out: list[str] = []
    for token in tokens or (DEFAULT_LAYER,):
        if token in known_presets and token not in table.presets:
            raise FeatbenchError(f"cnn:{model}: no preset '@{token}' for this model; presets exist for "
                                 f"{', '.join(sorted(MODEL_LAYERS))}")
        for name in table.presets.get(token, (token,)):
            if name not in out:
                out.append(name)
    return out


def node_for(model: str, output: str) -> str:
    """The graph node an output name stands for (its alias target, or itself)."""
    return model_layers(model).aliases.get(output, output)


def describe_layers(model: str) -> str:
    """One line listing a model's presets and aliases, for error messages."""
    table = model_layers(model)
    parts = [f"@{name} = {'+'.join(tokens)}" for name, tokens in table.presets.items()]
    parts += [f"{alias} = {node}" for alias, node in table.aliases.items()]
    parts.append("pre_logits, logits, or any node name from get_graph_node_names")
    return "; ".join(parts)
