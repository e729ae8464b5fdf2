"""Registered classical extractors: a local-descriptor stage followed by a learned encoding.

Each extractor = :class:`~featbench.features.local.LocalStage` (which descriptors, at which
resolution) + an encoder from :mod:`featbench.features.encodings` (bag of words, VLAD or
Fisher vector, optionally over a spatial pyramid). ``fit`` samples at most ``max_desc``
descriptors per training image (seeded per image from ``seed`` and the image's identity, so
the codebook does not depend on the order of the images) and learns the codebook or GMM
from them; nothing else is learned and nothing is learned from test images.

Options (spec ``name:key=value,...``; defaults in the ``params`` of each class):

* ``max_side`` (300): resize policy, see :mod:`featbench.features.local`.
* ``root`` (true for SIFT, false for SURF): RootSIFT.
* ``step``/``sizes`` (dense methods): grid step in px and scales (SIFT bin sizes; SURF sizes).
* ``flat`` (dense SIFT): ``zero`` (PHOW), ``drop`` or ``keep`` low-contrast windows, see
  :mod:`featbench.features.local`.
* ``hessian``, ``extended`` (SURF), ``n_features`` (ORB): detector settings.
* ``k``: codebook size / GMM components; ``levels``: spatial pyramid levels (1 = none).
* ``max_desc`` (200): descriptors sampled per training image to fit the codebook; the
  pooled sample is further capped at 256 per cluster (see ``MAX_POINTS_PER_CLUSTER``).
* bag of words: ``norm=l1|hellinger``, ``kmap=none|chi2|intersection`` (with ``norm=l1``).
* VLAD / Fisher: ``pca``: descriptor PCA dimension (``none`` keeps all).

Defaults follow Chatfield et al. (2011) "The devil is in the details" and VLFeat's PHOW
recipe where those apply (dense SIFT every 4 px at bin sizes 4, 6, 8, 10; k = 1000 for
hard-assignment histograms; a 256-component GMM on PCA-64 descriptors for Fisher vectors;
Lazebnik's 3-level pyramid with PHOW's chi2 map), plus RootSIFT (Arandjelović & Zisserman
2012). How the encodings compare on 15-Scene: README, "Measured design choices".

Runtime (not parameters, never in the cache key): ``threads`` workers decode and describe
images in parallel (OpenCV and numpy release the GIL), ``memo_bytes`` bounds the
in-memory descriptor memo that saves recomputing the training images' descriptors between
``fit`` and their ``transform``, and a :class:`~featbench.features.descriptor_store.DescriptorStore`
(``use_descriptor_store``; the runner keeps one per dataset) keeps every image's descriptors on disk
so that later trials and other extractors on the same stage read them instead of recomputing.
"""
from __future__ import annotations

import contextlib
import os
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from typing import Any, Callable, ClassVar, Iterator, Sequence

import numpy as np
from threadpoolctl import threadpool_limits

from featbench.errors import FeatbenchError

from .base import Extractor, register
from .encodings import (MAX_POINTS_PER_CLUSTER, BowEncoder, FisherEncoder, VladEncoder, check_positive,
                        sample_rows, stable_rng)
from .local import DescriptorMemo, LocalFeatures, LocalStage, image_key, load_pixels, prepare_gray

#: Images described ahead of the encoder; bounds the descriptors held at once.
LOOKAHEAD = 8
DEFAULT_MEMO_BYTES = 1 << 30

SIFT_DENSE = {"max_side": 300, "root": True, "step": 4, "sizes": [4, 6, 8, 10], "flat": "zero"}
SIFT_SPARSE = {"max_side": 300, "root": True}
#: Dense SURF sizes 6..15 give 16..40 px windows (20 * 1.2 * size / 9), PHOW's patch range.
SURF_DENSE = {"max_side": 300, "root": False, "extended": False, "step": 4, "sizes": [6, 9, 12, 15]}
SURF_SPARSE = {"max_side": 300, "root": False, "extended": False, "hessian": 400.0}
#: ORB's own default keeps 500 keypoints; a bag of words wants more descriptors per image.
ORB = {"max_side": 300, "n_features": 1500}

_STAGE_FIELDS = ("max_side", "root", "step", "sizes", "hessian", "extended", "n_features", "flat")


class LocalEncodingExtractor(Extractor):
    """Base of the registered classical extractors: describe, sample, learn, encode."""

    learns = True
    family = "classical"
    local_method: ClassVar[str] = ""
    later_params = frozenset({"flat"})  # the default (zero) is what every cached record used

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.threads = os.cpu_count() or 1
        self.memo_bytes = DEFAULT_MEMO_BYTES
        self._encoder = None
        self._memo = DescriptorMemo(0)
        self.descriptor_store = None

    @cached_property
    def stage(self) -> LocalStage:
        """The local-descriptor stage, built (and its options checked) on first use."""
        return LocalStage(self.local_method, **{k: getattr(self, k) for k in _STAGE_FIELDS if k in self.params})

    def check(self) -> None:
        """Every option, before a run starts: the descriptor stage, the encoder, ``max_desc``."""
        self.stage
        self.new_encoder()
        if self.max_desc is not None:
            check_positive("max_desc", self.max_desc)

    def new_encoder(self):
        raise NotImplementedError

    def __getstate__(self) -> dict[str, Any]:
        """What travels to another process (a Ray worker): parameters and the fitted encoder,
        not the descriptor memo (process-local, holds a lock, up to ``memo_bytes``)."""
        state = dict(self.__dict__)
        state["_memo"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._memo = DescriptorMemo(0)

    def configure_runtime(self, device: str = "cpu", batch_size: int | None = None,
                          num_workers: int | None = None, threads: int | None = None) -> None:
        super().configure_runtime(device, batch_size, num_workers, threads)
        self.threads = threads or self.threads

    def use_descriptor_store(self, store) -> None:
        self.descriptor_store = store

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["local_stage"] = {"key": self.stage.key, **self.stage.relevant_params()}
        if self._encoder is not None:
            info["dim"] = self.dim
        return info

    @property
    def dim(self) -> int:
        if self._encoder is None:
            raise FeatbenchError(f"extractor '{self.spec}' must be fitted before its dimension is known")
        return self._encoder.dim

    # -- estimator API ------------------------------------------------------------------
    def fit(self, images: Sequence[Any], labels: Sequence[int] | None = None, *,
            image_ids: Sequence[str] | None = None, seed: int = 0) -> "LocalEncodingExtractor":
        self.check()
        keys = [image_key(im) for im in images]
        super().fit(images, labels, image_ids=list(image_ids) if image_ids is not None else keys, seed=seed)
        self._memo = DescriptorMemo(self.memo_bytes)
        samples: dict[str, np.ndarray] = {}
        for key, feats in zip(keys, self._describe(images, keys)):
            self._memo.put(key, feats)
            samples[key] = sample_rows(feats.desc, self.max_desc, stable_rng(seed, key))
        if not samples:
            raise FeatbenchError(f"extractor '{self.spec}': fit needs at least one training image")
        sample = np.concatenate([samples[k] for k in sorted(samples)]).astype(np.float32)
        if len(sample) < self.k:
            raise FeatbenchError(f"extractor '{self.spec}': its {len(samples)} training image(s) gave {len(sample)} "
                                 f"local descriptors, fewer than k={self.k} (images too small or flat?); "
                                 "lower k or raise max_desc")
        sample = sample_rows(sample, MAX_POINTS_PER_CLUSTER * self.k, stable_rng(seed, "all"))
        self._encoder = self.new_encoder().fit(sample, seed)
        return self

    def transform_outputs(self, images: Sequence[Any]) -> dict[str, np.ndarray]:
        if self._encoder is None:
            raise FeatbenchError(f"extractor '{self.spec}' must be fitted before transform")
        keys = [image_key(im) for im in images]
        encoder = self._encoder
        # Each thread encodes its own image with single-threaded BLAS: with descriptors read from the
        # store, that is 1.8-2.2x faster on 2 cores than encoding in one thread with 2-thread BLAS.
        with threadpool_limits(limits=1, user_api="blas") if int(self.threads) > 1 else contextlib.nullcontext():
            codes = list(self._describe(images, keys, then=lambda f: encoder.encode(f.xy, f.desc)))
        out = np.stack(codes) if codes else np.zeros((0, self._encoder.dim), np.float32)
        return {"": out.astype(np.float32, copy=False)}

    def visualise(self, image: Any) -> dict[str, Any]:
        """The keypoints (with scale and orientation) or the dense grid this extractor describes;
        see :meth:`~featbench.features.local.LocalStage.keypoints`. Needs no fit."""
        return self.stage.keypoints(load_pixels(image))

    def speed_stages(self, device: str) -> "OrderedDict[str, Callable[[Any], Any]]":
        """``featbench speed``'s stages, sequential on one thread (``transform`` spreads images over a
        thread pool): preprocess (gray, resize policy), extract (local descriptors), encode."""
        if self._encoder is None:
            raise FeatbenchError(f"extractor '{self.spec}' must be fitted before transform")
        stage, encoder = self.stage, self._encoder
        return OrderedDict(
            preprocess=lambda images: [prepare_gray(im, stage.max_side) for im in images],
            extract=lambda grays: [stage.compute(g) for g in grays],  # the resize is a no-op by now
            encode=lambda feats: np.stack([encoder.encode(f.xy, f.desc) for f in feats]).astype(np.float32))

    # -- descriptors ------------------------------------------------------------------
    def _describe(self, images: Sequence[Any], keys: Sequence[str],
                  then: Callable[[LocalFeatures], Any] | None = None) -> Iterator[Any]:
        """Descriptors of each image in order: from the memo, else the descriptor store, else computed
        on the thread pool (and written to the store).

        ``then`` (``transform``'s encoding) runs in the same worker right after, so encoding, which is
        most of the work once descriptors come from the store, is spread over the threads too (BLAS
        and numpy release the GIL). Up to ``LOOKAHEAD`` images are in flight. With one
        thread (``configure_runtime(threads=1)``, as a Ray worker given one CPU is) everything
        runs in the caller's thread: a worker then keeps exactly one core busy, and N workers
        on N cores do not fight over them.
        """
        store, stage_key = self.descriptor_store, self.stage.key

        def work(i: int) -> Any:
            feats = self._memo.take(keys[i])
            if feats is None and store is not None:
                feats = store.get(stage_key, keys[i])
            if feats is None:
                feats = self.stage.compute(load_pixels(images[i]))
                if store is not None:
                    store.put(stage_key, keys[i], feats)
            return feats if then is None else then(feats)

        if int(self.threads) <= 1:
            yield from map(work, range(len(images)))
            return
        with ThreadPoolExecutor(int(self.threads)) as pool:
            pending: deque = deque()
            for i in range(len(images)):
                pending.append(pool.submit(work, i))
                if len(pending) > LOOKAHEAD:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()


class _Bow(LocalEncodingExtractor):
    def new_encoder(self) -> BowEncoder:
        return BowEncoder(self.k, levels=self.levels, norm=self.norm, kmap=self.kmap)


class _Vlad(LocalEncodingExtractor):
    def new_encoder(self) -> VladEncoder:
        return VladEncoder(self.k, pca=self.pca, levels=self.levels)


class _Fisher(LocalEncodingExtractor):
    def new_encoder(self) -> FisherEncoder:
        return FisherEncoder(self.k, pca=self.pca, levels=self.levels)


BOW = {"k": 1000, "norm": "hellinger", "kmap": None, "levels": 1, "max_desc": 200}
VLAD = {"k": 64, "pca": None, "levels": 1, "max_desc": 200}
FISHER = {"k": 256, "pca": 64, "levels": 1, "max_desc": 200}


@register("sift-bow")
class SiftBow(_Bow):
    """Sparse DoG SIFT (RootSIFT), 1000-word bag of words, Hellinger."""

    name, local_method = "sift-bow", "sift"
    params = {**SIFT_SPARSE, **BOW}


@register("sift-dense-bow")
class SiftDenseBow(_Bow):
    """Dense multi-scale SIFT (PHOW, RootSIFT), 1000-word bag of words, Hellinger."""

    name, local_method = "sift-dense-bow", "sift-dense"
    params = {**SIFT_DENSE, **BOW}


@register("sift-dense-bow-spm")
class SiftDenseBowSpm(_Bow):
    """Dense SIFT bag of words on a 3-level spatial pyramid with a chi2 kernel map (Lazebnik 2006)."""

    name, local_method = "sift-dense-bow-spm", "sift-dense"
    params = {**SIFT_DENSE, **BOW, "k": 400, "levels": 3, "norm": "l1", "kmap": "chi2"}


@register("sift-vlad")
class SiftVlad(_Vlad):
    """Sparse DoG SIFT (RootSIFT), VLAD with 64 words, intra-normalised."""

    name, local_method = "sift-vlad", "sift"
    params = {**SIFT_SPARSE, **VLAD}


@register("sift-dense-vlad")
class SiftDenseVlad(_Vlad):
    """Dense multi-scale SIFT (RootSIFT), VLAD with 64 words, intra-normalised."""

    name, local_method = "sift-dense-vlad", "sift-dense"
    params = {**SIFT_DENSE, **VLAD}


@register("sift-dense-fv")
class SiftDenseFisher(_Fisher):
    """Dense multi-scale SIFT (RootSIFT, PCA 64), improved Fisher vector with 256 Gaussians."""

    name, local_method = "sift-dense-fv", "sift-dense"
    params = {**SIFT_DENSE, **FISHER}


@register("surf-bow")
class SurfBow(_Bow):
    """Sparse Fast-Hessian SURF, 1000-word bag of words, Hellinger."""

    name, local_method = "surf-bow", "surf"
    params = {**SURF_SPARSE, **BOW}


@register("surf-dense-bow")
class SurfDenseBow(_Bow):
    """Dense upright SURF at four sizes, 1000-word bag of words, Hellinger."""

    name, local_method = "surf-dense-bow", "surf-dense"
    params = {**SURF_DENSE, **BOW}


@register("orb-bow")
class OrbBow(_Bow):
    """ORB binary descriptors (as 256 bits), 1000-word bag of words, Hellinger."""

    name, local_method = "orb-bow", "orb"
    params = {**ORB, **BOW}
