"""The extractor contract, checked the way scikit-learn's ``check_estimator`` checks estimators.

A plugin author (an extractor shipped through the ``featbench.extractors`` entry points) runs::

    from featbench.testing import check_extractor
    check_extractor("my-descriptor:k=8")        # a registered spec, or the Extractor subclass itself

on small images, in seconds. It raises :class:`ContractError` (an ``AssertionError``, so pytest
shows it as a failed test) naming the broken rule, or returns a summary of what passed:

1. ``config``: frozen, hashable, and it round-trips through the spec (``create(ex.spec).config ==
   ex.config``), so the cache key names exactly these parameters;
2. ``describe``: ``describe()`` is JSON-serialisable before and after ``fit`` (it goes to run.json);
3. ``fit``: learners refuse ``transform`` before ``fit``; the fit depends on the training images
   and seed only (same training set in another order -> identical features and cache key, another
   training set -> another cache key); non-learners' cache keys do not change with ``fit``;
4. ``output``: ``transform_outputs`` gives ``{output: float32 [n, d]}`` for every name in
   ``outputs``, finite, the same ``d`` on every call;
5. ``per-image``: an image's features do not depend on the other images in its batch, and
   transforming twice gives the same numbers (``transform`` learns nothing);
6. ``deterministic``: a fresh instance, fitted with the same seed, gives the same features;
7. ``cache``: each output's rows survive a :class:`featbench.cache.FeatureCache` ``put``/``get``
   round trip unchanged (dtype, shape, values);
8. ``bad image``: a truncated file in a batch is reported by ``iter_batches`` as that item's error
   (an :class:`~featbench.datasets.images.ImageDecodeError` naming the file) while the rest of the
   batch gets features; alone, it raises ``ImageDecodeError``;
9. ``degenerate sizes``: 1 x 1, 4 x 900, 900 x 4 and 2 x 3 images give finite features of the same
   ``d`` (an empty set of local descriptors is a valid, empty encoding), never a crash.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from featbench.datasets.folder import ImageRecord
from featbench.datasets.images import ImageDecodeError
from featbench.errors import FeatbenchError
from featbench.features.base import Extractor, create, parse_spec

DEGENERATE_SHAPES = ((1, 1), (4, 900), (900, 4), (2, 3))


class ContractError(AssertionError):
    """An extractor breaks the contract; the message names the rule."""


def _require(condition: bool, rule: str, detail: str) -> None:
    if not condition:
        raise ContractError(f"{rule}: {detail}")


def _photos(n: int, size: int, offset: int) -> list[np.ndarray]:
    """Crops of scikit-image's sample photos (real structure for detectors), deterministic."""
    from skimage import data

    sources = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    out = []
    for i in range(offset, offset + n):
        img = sources[i % len(sources)]
        h, w = img.shape[:2]
        y, x = (37 * i) % (h - size), (53 * i) % (w - size)
        out.append(np.ascontiguousarray(img[y:y + size, x:x + size]))
    return out


def _records(images: Sequence[np.ndarray], folder: Path, prefix: str) -> list[ImageRecord]:
    from PIL import Image

    records = []
    for i, img in enumerate(images):
        path = folder / f"{prefix}{i:02d}.png"
        Image.fromarray(img).save(path)
        uid = hashlib.sha256(path.read_bytes()).hexdigest()
        records.append(ImageRecord(uid=uid, label=f"c{i % 2}", group=prefix, relpath=path.name, path=str(path)))
    return records


class _Checker:
    def __init__(self, make: Callable[[], Extractor], rebuild: Callable[[str], Extractor], folder: Path,
                 n_train: int, n_test: int, size: int, seed: int) -> None:
        self.make, self.rebuild, self.seed = make, rebuild, seed
        self.train = _records(_photos(n_train, size, 0), folder, "train")
        self.test = _records(_photos(n_test, size, n_train), folder, "test")
        self.other_train = _records(_photos(n_train, size, n_train + n_test), folder, "other")
        self.bad = folder / "truncated.jpg"
        self.bad.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 30)
        self.folder = folder
        self.passed: list[str] = []

    def fresh(self) -> Extractor:
        ex = self.make()
        ex.configure_runtime(device="cpu", batch_size=4, num_workers=0, threads=1)
        return ex

    def fitted(self, train: Sequence[ImageRecord] | None = None) -> Extractor:
        ex = self.fresh()
        train = list(self.train if train is None else train)
        return ex.fit(train, [r.label for r in train], image_ids=[r.uid for r in train], seed=self.seed)

    def outputs(self, ex: Extractor, items: Sequence[Any], what: str) -> dict[str, np.ndarray]:
        outs = ex.transform_outputs(list(items))
        _require(isinstance(outs, dict) and list(outs) == list(ex.outputs), "output",
                 f"transform_outputs({what}) returned keys {list(outs) if isinstance(outs, dict) else type(outs)}, "
                 f"outputs says {ex.outputs}")
        for name, X in outs.items():
            _require(isinstance(X, np.ndarray) and X.dtype == np.float32 and X.ndim == 2 and len(X) == len(items),
                     "output", f"output '{name}' of {what}: expected float32 [{len(items)}, d], got "
                     f"{getattr(X, 'dtype', type(X))} {getattr(X, 'shape', '')}")
            _require(bool(np.isfinite(X).all()), "output", f"output '{name}' of {what} holds NaN or inf")
        return outs

    def same(self, a: dict[str, np.ndarray], b: dict[str, np.ndarray], rule: str, what: str, torch: bool) -> None:
        for name in a:
            ok = np.allclose(a[name], b[name], rtol=1e-4, atol=1e-5) if torch else np.array_equal(a[name], b[name])
            _require(a[name].shape == b[name].shape and ok, rule, f"output '{name}': {what} differ")

    def run(self) -> dict[str, Any]:
        ex = self.fresh()
        self.check_config(ex)
        self.check_describe(ex, "before fit")
        if ex.learns:
            try:
                ex.transform_outputs(self.test[:1])
            except FeatbenchError:
                pass
            else:
                raise ContractError("fit: a learned extractor transformed before fit (its cache key needs the fit)")
        ex = self.fitted()
        self.check_describe(ex, "after fit")
        torch = ex.uses_torch
        feats = self.outputs(ex, self.test, "the test images")
        dims = {name: X.shape[1] for name, X in feats.items()}
        self.check_fit(ex, feats, torch)
        self.passed += ["config", "describe", "fit", "output"]

        single = [self.outputs(ex, [r], r.relpath) for r in self.test]
        joined = {name: np.concatenate([s[name] for s in single]) for name in feats}
        self.same(feats, joined, "per-image", "a batch's rows and the same images one by one", torch)
        self.same(feats, self.outputs(ex, self.test, "the test images again"), "per-image",
                  "two transforms of the same images", torch)
        self.passed.append("per-image")

        self.same(feats, self.outputs(self.fitted(), self.test, "the test images"), "deterministic",
                  "features of two instances fitted with the same seed", torch)
        self.passed.append("deterministic")
        self.check_cache(ex, feats)
        self.check_bad_image(ex)
        self.check_degenerate(ex, dims)
        return {"spec": ex.spec, "outputs": list(ex.outputs), "dims": dims, "passed": list(self.passed)}

    def check_config(self, ex: Extractor) -> None:
        config = ex.config
        try:
            hash(config)
        except TypeError as exc:
            raise ContractError(f"config: not hashable ({exc})") from None
        try:
            config.name = "changed"  # type: ignore[misc]
        except (AttributeError, TypeError):
            pass
        else:
            raise ContractError("config: can be changed after construction (it must be frozen)")
        again = self.rebuild(ex.spec)
        _require(again.config == config and again.config.key == config.key, "config",
                 f"spec '{ex.spec}' rebuilds a different config: {again.config.as_dict()} != {config.as_dict()}")

    def check_describe(self, ex: Extractor, when: str) -> None:
        try:
            json.dumps(ex.describe())
        except (TypeError, ValueError) as exc:
            raise ContractError(f"describe: describe() {when} is not JSON-serialisable ({exc})") from None

    def check_fit(self, ex: Extractor, feats: dict[str, np.ndarray], torch: bool) -> None:
        keys = [ex.cache_key(o) for o in ex.outputs]
        reordered = self.fitted(list(reversed(self.train)))
        _require([reordered.cache_key(o) for o in ex.outputs] == keys, "fit",
                 "the same training images in another order give another cache key")
        self.same(feats, self.outputs(reordered, self.test, "the test images"), "fit",
                  "features after fitting on the same training images in another order", torch)
        other = [other.cache_key(o) for other in [self.fitted(self.other_train)] for o in ex.outputs]
        if ex.learns:
            _require(other != keys, "fit", "another training set gives the same cache key (stale features would "
                                            "be reused)")
        else:
            _require(other == keys and [self.fresh().cache_key(o) for o in ex.outputs] == keys, "fit",
                     "an extractor that learns nothing changed its cache key with fit")

    def check_cache(self, ex: Extractor, feats: dict[str, np.ndarray]) -> None:
        from featbench.cache import FeatureCache

        cache = FeatureCache(self.folder / "cache")
        for name, X in feats.items():
            namespace = ex.cache_key(name)
            for rec, row in zip(self.test, X):
                cache.put(namespace, rec.uid, row)
            for rec, row in zip(self.test, X):
                back = cache.get(namespace, rec.uid)
                _require(back is not None and back.dtype == row.dtype and back.shape == row.shape
                         and np.array_equal(back, row), "cache", f"output '{name}': a row changed through the cache")
        self.passed.append("cache")

    def check_bad_image(self, ex: Extractor) -> None:
        bad = ImageRecord(uid="bad", label="c0", group="test", relpath=self.bad.name, path=str(self.bad))
        items = [self.test[0], bad, self.test[1 % len(self.test)]]
        done, errors = [], {}
        for indices, outs, errs in ex.iter_batches(items, 2):
            done += list(indices)
            errors.update(errs)
            for name, X in outs.items():
                _require(X.dtype == np.float32 and len(X) == len(indices), "bad image",
                         f"iter_batches gave {X.shape} {X.dtype} for {len(indices)} items")
        _require(sorted(done) == [0, 2] and list(errors) == [1], "bad image",
                 f"iter_batches over [good, truncated, good]: done {sorted(done)}, errors {sorted(errors)}")
        _require(self.bad.name in errors[1], "bad image", f"the reason does not name the file: {errors[1]!r}")
        try:
            ex.transform_outputs([bad])
        except ImageDecodeError:
            pass
        else:
            raise ContractError("bad image: transform_outputs([truncated file]) did not raise ImageDecodeError")
        self.passed.append("bad image")

    def check_degenerate(self, ex: Extractor, dims: dict[str, int]) -> None:
        rng = np.random.default_rng(self.seed)
        for h, w in DEGENERATE_SHAPES:
            img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            try:
                outs = self.outputs(ex, [img], f"a {w} x {h} image")
            except ContractError:
                raise
            except Exception as exc:  # noqa: BLE001 - the point: nothing may escape
                raise ContractError(f"degenerate sizes: a {w} x {h} image raised {type(exc).__name__}: {exc}") from None
            got = {name: X.shape[1] for name, X in outs.items()}
            _require(got == dims, "degenerate sizes", f"a {w} x {h} image gave dims {got}, others {dims}")
        self.passed.append("degenerate sizes")


def check_extractor(spec: str | type[Extractor], *, n_train: int = 6, n_test: int = 3, size: int = 96,
                    seed: int = 0, workdir: str | Path | None = None) -> dict[str, Any]:
    """Check that ``spec`` (a registered spec string, or an Extractor subclass built with its
    defaults) keeps the extractor contract (module docstring); raise :class:`ContractError` or
    return ``{"spec", "outputs", "dims", "passed"}``. Choose a spec with fast settings (a small
    ``k`` for codebooks): everything runs on ``n_train + n_test`` images of ``size`` px."""
    if isinstance(spec, type):
        cls = spec
        make: Callable[[], Extractor] = cls

        def rebuild(text: str) -> Extractor:
            return cls(**parse_spec(text).options)
    else:
        make = lambda: create(spec)  # noqa: E731
        rebuild = create
    with tempfile.TemporaryDirectory(prefix="featbench-contract-", dir=workdir) as tmp:
        return _Checker(make, rebuild, Path(tmp), n_train, n_test, size, seed).run()


__all__ = ["ContractError", "check_extractor", "DEGENERATE_SHAPES"]
