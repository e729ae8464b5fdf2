"""Extractor base class, spec grammar and registry.

An extractor follows scikit-learn's estimator conventions:

* ``__init__`` only stores its keyword parameters (declared in ``params``); no work, no I/O.
* ``config`` is a frozen, hashable view of those parameters plus the class's ``version``;
  its ``key`` (a short sha256) names the extractor in the feature cache, so a changed
  parameter or a bumped ``version`` never reuses stale features.
* ``fit(train_images)`` learns whatever the extractor learns (codebooks, PCA, GMMs) from
  training images only; extractors that learn nothing need not override it.
* ``transform(images)`` returns ``float32 [n, d]``. An extractor that yields several outputs
  from one pass (a CNN tapped at several layers) lists them in ``outputs`` and implements
  ``transform_outputs``; each output becomes its own row in the results.

Images are RGB ``uint8`` arrays ``[H, W, 3]`` (see :mod:`featbench.datasets.images`), or records
with a ``load()`` method returning one (:func:`as_image`), so extractors that decode in parallel
workers (the CNN's DataLoader) can do so.

Spec grammar (``featbench list extractors`` prints what is registered)::

    spec    := name [ "@" layers ] [ ":" options ]
    layers  := layer { "+" layer }           # e.g. cnn:tf_efficientnet_lite0@blocks.5+pre_logits
    options := key "=" value { "," key "=" value }

For ``cnn`` the model name follows the first colon: ``cnn:MODEL[@LAYERS][:OPTIONS]``.
Values are parsed as int, float, true/false/none, else kept as strings; a ``+`` inside a
value separates list items (``levels=1+2``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Callable, ClassVar, Iterator, Sequence

import numpy as np

from featbench.datasets.images import ImageDecodeError
from featbench.errors import FeatbenchError
from featbench.options import format_value, parse_options, parse_value  # noqa: F401  (parse_value: public here)
from featbench.registry import Registry, first_line

ENTRY_POINT_GROUP = "featbench.extractors"

#: What ``iter_batches`` (and every executor) yields per batch: item indices done, their
#: features ``{output: float32 [len(indices), d]}``, and ``{index: reason}`` for items that failed.
Batch = tuple[list[int], dict[str, np.ndarray], dict[int, str]]


def as_image(item: Any) -> np.ndarray:
    """Pixels of an item handed to ``transform``: an RGB uint8 array, or a record with ``load()``."""
    return item if isinstance(item, np.ndarray) else item.load()


def _jsonable(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in sorted(value.items())}
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    return value


@dataclasses.dataclass(frozen=True)
class ExtractorConfig:
    """Frozen identity of an extractor: name, version and parameters (sorted, JSON-able)."""

    name: str
    version: str
    params: tuple[tuple[str, Any], ...]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "params": dict(self.params)}

    @property
    def key(self) -> str:
        blob = json.dumps(self.as_dict(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def __hash__(self) -> int:  # params may hold lists; hash the canonical JSON instead
        return hash(self.key)


class Extractor:
    """Base class for every feature extractor.

    Subclasses set ``name`` and ``version`` and declare their parameters with defaults in
    ``params``. Bump ``version`` whenever the numbers a given config produces change.
    """

    name: ClassVar[str] = "base"
    version: ClassVar[str] = "1"
    family: ClassVar[str] = "classical"  # "cnn" or "classical"; used to group report rows
    params: ClassVar[dict[str, Any]] = {}
    #: Parameters added after features were cached and published: left out of ``config`` (hence
    #: the cache key) while at their default, which reproduces the earlier features exactly.
    later_params: ClassVar[frozenset[str]] = frozenset()
    #: True when ``fit`` learns state from training images (the cache key then includes them).
    learns: ClassVar[bool] = False
    #: True when ``transform`` accepts a ``device`` (torch) and benefits from batching.
    uses_torch: ClassVar[bool] = False
    #: False when features come from files, not pixels (``precomputed``): not timed, refuses arrays.
    reads_pixels: ClassVar[bool] = True

    def __init__(self, **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - set(self.params))
        if unknown:
            raise FeatbenchError(
                f"extractor '{self.name}': unknown option(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(self.params)) or 'none'}"
            )
        for key, default in self.params.items():
            setattr(self, key, kwargs.get(key, default))
        self.fit_key: str | None = None

    # -- identity -------------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.params}

    def keyed_params(self) -> dict[str, Any]:
        """The parameters that identify the features: all of them, less ``later_params`` at their default."""
        return {k: v for k, v in self.get_params().items() if not (k in self.later_params and v == self.params[k])}

    @property
    def config(self) -> ExtractorConfig:
        items = tuple(sorted((k, _jsonable(v)) for k, v in self.keyed_params().items()))
        return ExtractorConfig(self.name, str(self.version), items)

    @property
    def spec(self) -> str:
        """A spec string that rebuilds this extractor (non-default options only)."""
        opts = [f"{k}={_format_value(v)}" for k, v in self.get_params().items() if v != self.params[k]]
        return self.name + (":" + ",".join(opts) if opts else "")

    @property
    def outputs(self) -> list[str]:
        """Names of the feature outputs one pass yields (a CNN's layers); default one, ''."""
        return [""]

    def cache_key(self, output: str = "") -> str:
        """Cache namespace for one output: config, version, output and (if learned) fit state."""
        parts = [self.config.key, output]
        if self.learns:
            if self.fit_key is None:
                raise FeatbenchError(f"extractor '{self.spec}' must be fitted before transform")
            parts.append(self.fit_key)
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]

    def describe(self) -> dict[str, Any]:
        """Provenance for run.json (weights, preprocessing, ...). Override to add details."""
        return {"spec": self.spec, **self.config.as_dict()}

    def configure_runtime(self, device: str = "cpu", batch_size: int | None = None,
                          num_workers: int | None = None, threads: int | None = None) -> None:
        """Runtime settings that do not change the features (device, batching, threads).

        They are not parameters, so they never enter the cache key. Extractors that use torch
        override this; the default ignores everything but remembers the device.
        """
        self.device = device

    def bind_dataset(self, dataset: Any) -> None:
        """Called with a task's whole dataset before its features are extracted. The default does
        nothing; ``precomputed`` matches feature-file rows to every image of a domain here."""

    def use_descriptor_store(self, store: Any) -> None:
        """Runtime: a :class:`~featbench.features.descriptor_store.DescriptorStore` the runner keeps for
        the current dataset, where extractors built on local descriptors keep them between trials and
        share them with each other. The default ignores it."""

    def check(self) -> None:
        """Raise a :class:`FeatbenchError` now for anything that would stop this extractor later
        (missing weights, ...), so a run fails before any work. The default checks nothing."""

    # -- estimator API ----------------------------------------------------------------
    def fit(self, images: Sequence[np.ndarray], labels: Sequence[int] | None = None, *,
            image_ids: Sequence[str] | None = None, seed: int = 0) -> "Extractor":
        """Learn from training images only. ``image_ids`` and ``seed`` fix the fit identity."""
        self.identify_fit(image_ids, seed)
        return self

    def identify_fit(self, image_ids: Sequence[str] | None, seed: int) -> None:
        """Set ``fit_key``, the identity of a fit on ``image_ids`` with ``seed``, without learning anything.

        The runner calls it before ``fit`` so that it can look up the features of a fit it may not
        need to run: when the cache holds every feature of a trial, the (costly) fit is skipped.
        """
        if self.learns:
            ids = sorted(image_ids) if image_ids is not None else []
            blob = json.dumps({"ids": ids, "seed": seed}).encode()
            self.fit_key = hashlib.sha256(blob).hexdigest()[:16]

    def transform(self, images: Sequence[np.ndarray]) -> np.ndarray:
        outs = self.transform_outputs(images)
        if len(outs) != 1:
            raise FeatbenchError(f"extractor '{self.spec}' has several outputs; use transform_outputs")
        return next(iter(outs.values()))

    def transform_outputs(self, images: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """Features of ``images`` for every output: ``{output: float32 [n, d]}``."""
        return {"": np.stack([self.transform_one(as_image(im)) for im in images]).astype(np.float32, copy=False)}

    def iter_batches(self, items: Sequence[Any], batch_size: int) -> Iterator[
            tuple[list[int], dict[str, np.ndarray], dict[int, str]]]:
        """Features batch by batch, so a caller can keep each batch the moment it exists.

        Yields ``(indices, {output: float32 [len(indices), d]}, {index: reason})``: the items
        done, their features, and the items that would not decode (with the reason). A bad
        image never costs the rest of its batch. Extractors with a pipelined loader (the CNN's
        DataLoader) override this to keep their workers busy across batches.
        """
        for start in range(0, len(items), batch_size):
            chunk = list(items[start:start + batch_size])
            indices = list(range(start, start + len(chunk)))
            try:
                yield indices, self.transform_outputs(chunk), {}
                continue
            except ImageDecodeError:
                pass
            done, parts, errors = [], [], {}
            for i, item in zip(indices, chunk):
                try:
                    parts.append(self.transform_outputs([item]))
                    done.append(i)
                except ImageDecodeError as exc:
                    errors[i] = str(exc)
            outs = {o: np.concatenate([p[o] for p in parts]) for o in parts[0]} if parts else {}
            yield done, outs, errors

    # -- pictures (the report's "what each extractor sees" gallery) ---------------------
    def visualise(self, image: np.ndarray) -> dict[str, Any]:
        """What this extractor looks at in one RGB ``uint8`` image, as drawing material.

        Returns ``{}`` (nothing to draw) or ``{"kind": str, **arrays}``, plus optionally
        ``"spatial": {output: float32 [d, h, w]}``: a map whose mean over ``(h, w)`` is that
        output's feature vector, so that a linear probe's class score can be spread over the
        image (a class activation map). Kinds drawn by the report: ``keypoints``, ``dense-grid``
        (:class:`~featbench.features.classical.LocalEncodingExtractor`), ``hog-cells``
        (:class:`~featbench.features.hog.HOG`), ``cnn`` (:class:`~featbench.features.cnn.CNN`).
        Arrays must be numeric (they are stored with ``np.savez``, read without pickle). It
        needs no ``fit``.
        """
        return {}

    def visualise_model(self) -> dict[str, Any]:
        """Image-independent drawing material (a CNN's first convolution filters); ``{}`` by default."""
        return {}

    # -- speed hooks (featbench speed times extractors only through these) ------------------
    def speed_stages(self, device: str) -> "dict[str, Callable[[Any], Any]] | None":
        """Ordered stage functions for ``featbench speed``'s per-stage timing, or None (timed whole).

        Optionally ``decode`` (``fn(bytes, record) -> RGB array``) first, then any of ``preprocess``,
        ``transfer``, ``extract``, ``encode``, each mapping the previous stage's batch output to its
        own (the first gets a list of RGB arrays).
        """
        return None

    def speed_synthetic(self, device: str, batch_size: int, images: Sequence[np.ndarray]
                        ) -> Callable[[], Any] | None:
        """A no-argument callable running the model alone on a ready on-device batch made from
        ``images`` (``--synthetic``), or None for an extractor without a model."""
        return None

    def transform_one(self, image: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} implements neither transform_outputs nor transform_one")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec}>"


# ----------------------------------------------------------------------------------
# Spec parsing
# ----------------------------------------------------------------------------------

_format_value = format_value  # spelled once, in featbench.options


def split_specs(text: str | None) -> list[str]:
    """Split ``--extractors``: commas separate specs, but a comma inside a spec's options
    (``hog:size=64,cell=8``) continues it: a piece with ``=`` and no ``:`` before it joins the
    previous spec. ``;`` always separates."""
    if not text:
        return []
    specs: list[str] = []
    for part in text.replace(";", "\n").split("\n"):
        for piece in part.split(","):
            piece = piece.strip()
            if not piece:
                continue
            head = piece.split("=", 1)[0]
            if specs and "=" in piece and ":" not in head and "@" not in head:
                specs[-1] += "," + piece
            else:
                specs.append(piece)
    return specs


@dataclasses.dataclass(frozen=True)
class ParsedSpec:
    name: str
    target: str | None  # the model for cnn:MODEL
    layers: tuple[str, ...]
    options: dict[str, Any]


def parse_spec(spec: str) -> ParsedSpec:
    spec = spec.strip()
    if not spec:
        raise FeatbenchError("empty extractor spec")
    name, _, rest = spec.partition(":")
    target = None
    if name == "cnn":
        if not rest:
            raise FeatbenchError("extractor spec 'cnn' needs a model: cnn:MODEL[@LAYER[+LAYER..]][:OPTIONS]")
        target, _, rest = rest.partition(":")
        target, _, layer_text = target.partition("@")
    else:
        name, _, layer_text = name.partition("@")
    layers = tuple(l for l in layer_text.split("+") if l) if layer_text else ()
    options = parse_options(rest, f"extractor spec '{spec}'") if rest else {}
    return ParsedSpec(name, target, layers, options)


# ----------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------

Factory = Callable[[ParsedSpec], Extractor]


def _load_builtins() -> None:
    import featbench.features  # noqa: F401  (its modules register the built-in extractors)


#: name -> factory(ParsedSpec) -> Extractor; plugins come from the ``featbench.extractors`` entry points
EXTRACTORS: Registry[Factory] = Registry("extractor", entry_points=ENTRY_POINT_GROUP, load=_load_builtins,
                                         add_plugin=lambda name, obj: register(name)(obj))


def register(name: str, summary: str = "", examples: Sequence[str] = ()) -> Callable[[Any], Any]:
    """Register an Extractor subclass (or a factory taking a ParsedSpec) under ``name``.

    ``examples``: specs that build a working instance when the name alone does not (``cnn`` needs a
    model); ``featbench speed`` times them and the registry test builds them.
    """

    def deco(obj: Any) -> Any:
        if isinstance(obj, type) and issubclass(obj, Extractor):
            def factory(parsed: ParsedSpec, cls=obj) -> Extractor:
                if parsed.layers:
                    raise FeatbenchError(f"extractor '{parsed.name}' takes no @layer")
                return cls(**parsed.options)
            factory.__module__, factory.__qualname__ = obj.__module__, obj.__qualname__
            EXTRACTORS.register(name, factory, summary=summary or first_line(obj.__doc__), cls=obj,
                                examples=list(examples) or [name])
        else:
            EXTRACTORS.register(name, obj, summary=summary, cls=None, examples=list(examples) or [name])
        return obj

    return deco


def extractor_class(name: str) -> type[Extractor] | None:
    """The Extractor subclass registered as ``name`` (None for a plain factory such as ``cnn``)."""
    return EXTRACTORS.entry(name).meta.get("cls")


def reads_pixels(name: str) -> bool:
    """False for extractors that read their features from files (``precomputed``): nothing to time
    on photos, and they refuse pixel arrays with a clear error."""
    cls = extractor_class(name)
    return cls is None or bool(getattr(cls, "reads_pixels", True))


def example_specs(name: str) -> list[str]:
    """Specs that build working instances of the extractor registered as ``name``."""
    return list(EXTRACTORS.entry(name).meta["examples"])


def available() -> dict[str, str]:
    """Registered extractor names and one-line summaries."""
    return EXTRACTORS.summaries()


def create(spec: str) -> Extractor:
    """Build an extractor from a spec string such as ``sift-dense-bow:k=1000``."""
    parsed = parse_spec(spec)
    if parsed.name not in EXTRACTORS:
        raise FeatbenchError(
            f"unknown extractor '{parsed.name}' (from spec '{spec}'); known: {', '.join(sorted(EXTRACTORS.names()))}"
        )
    return EXTRACTORS.get(parsed.name)(parsed)
