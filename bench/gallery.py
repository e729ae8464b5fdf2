"""What a run keeps for the report's galleries ("what each extractor sees", failures), pickle-free.

:class:`GalleryKeeper` writes ``RUN_DIR/gallery/`` (the runner calls it at the start of a task,
once per extractor, after every evaluation and at the end of the task); the format, and the reading
side the report uses, are in :mod:`featbench.reports.gallery_data`. Every step is best effort: a
picture that cannot be made is recorded with its reason and never stops a run.
"""
from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from featbench.atomic import atomic_write_bytes
from featbench.reports.gallery_data import GALLERY_DIR

GALLERY_IMAGES = 8
IMAGE_SIDE = 320
THUMB_SIDE = 96
THUMB_CAP = 1500


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:48]


def jpeg_bytes(pixels: np.ndarray, side: int, quality: int = 85) -> bytes:
    from PIL import Image

    img = Image.fromarray(np.asarray(pixels, dtype=np.uint8))
    img.thumbnail((side, side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality, optimize=True)
    return buf.getvalue()


def choose_images(records: Sequence[Any], seed: int, cap: int = GALLERY_IMAGES) -> list[Any]:
    """One or two test images per class (two when there are at most four classes), up to ``cap``,
    in a seeded order; records must have ``label``."""
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[Any]] = {}
    for r in records:
        by_class.setdefault(r.label, []).append(r)
    classes = sorted(by_class)
    per_class = 2 if len(classes) <= 4 else 1
    order = [classes[i] for i in rng.permutation(len(classes))]
    picked = []
    for _ in range(per_class):
        for c in order:
            pool = by_class[c]
            if pool:
                picked.append(pool.pop(int(rng.integers(len(pool)))))
    return picked[:cap] if per_class == 1 else sorted(picked[:cap], key=lambda r: classes.index(r.label))


def _split_visual(vis: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, str], dict[str, np.ndarray]]:
    arrays, strings = {}, {}
    spatial = vis.pop("spatial", None) or {}
    for k, v in vis.items():
        if isinstance(v, str):
            strings[k] = v
        else:
            arrays[k] = np.asarray(v)
    return arrays, strings, spatial


class GalleryKeeper:
    """Keeps the gallery material of a run (see the module docstring). Every step is best effort:
    a picture that cannot be made is recorded with its reason and never stops the run."""

    def __init__(self, out: Path, seed: int, classifier: str) -> None:
        self.root = Path(out) / GALLERY_DIR
        self.seed, self.classifier = seed, classifier
        self.index: dict[str, Any] = {"format": 1, "tasks": {}}
        self._pixels: dict[str, list[np.ndarray]] = {}
        self._spatial: dict[tuple[str, str], dict[int, dict[str, np.ndarray]]] = {}
        self._wrong: dict[str, set[str]] = {}
        self._test: dict[str, list[Any]] = {}

    def _dir(self, task: str) -> Path:
        return self.root / self.index["tasks"][task]["dir"]

    def start_task(self, task: Any, test: Sequence[Any]) -> None:
        """Choose and save the task's gallery images from trial 0's test records."""
        from featbench.datasets.images import ImageDecodeError

        entry = {"dir": f"{len(self.index['tasks']):02d}-{_slug(task.name)}", "trial": 0, "split": "test",
                 "seed": self.seed, "classifier": self.classifier, "classes": list(task.dataset.classes),
                 "images": [], "extractors": [], "probes": [], "thumbs": {}, "thumbs_left_out": 0}
        self.index["tasks"][task.name] = entry
        self._test[task.name], self._wrong[task.name], self._pixels[task.name] = list(test), set(), []
        folder = self._dir(task.name) / "images"
        folder.mkdir(parents=True, exist_ok=True)
        for rec in choose_images(list(test), self.seed, GALLERY_IMAGES * 2):
            if len(entry["images"]) == GALLERY_IMAGES:
                break
            try:
                pixels = rec.load()
            except ImageDecodeError:
                continue
            except Exception:  # records that are no images (rows of a feature file): no gallery for the task
                break
            name = f"images/{len(entry['images']):02d}.jpg"
            (folder.parent / name).write_bytes(jpeg_bytes(pixels, IMAGE_SIDE))
            entry["images"].append({"uid": rec.uid, "relpath": rec.relpath, "label": rec.label, "file": name,
                                    "width": int(pixels.shape[1]), "height": int(pixels.shape[0])})
            self._pixels[task.name].append(pixels)
        self._write_index()

    def see(self, task: str, extractor: Any) -> None:
        """Run ``extractor.visualise`` on the task's gallery images and keep what it returns."""
        if task not in self.index["tasks"]:
            return
        entry = self.index["tasks"][task]
        n = len(entry["extractors"])
        item: dict[str, Any] = {"extractor": extractor.spec, "family": extractor.family,
                                "file": f"sees-{n:02d}-{_slug(extractor.spec)}.npz", "strings": [], "errors": {}}
        arrays: dict[str, np.ndarray] = {}
        spatial: dict[int, dict[str, np.ndarray]] = {}
        for i, pixels in enumerate(self._pixels[task]):
            try:
                got, strings, spatial[i] = _split_visual(extractor.visualise(pixels))
            except Exception as exc:  # a picture must never stop a run
                item["errors"][str(i)] = f"{type(exc).__name__}: {exc}"
                item["strings"].append({})
                continue
            arrays.update({f"{i}/{k}": v for k, v in got.items()})
            item["strings"].append(strings)
        try:
            model = extractor.visualise_model()
        except Exception as exc:
            model, item["errors"]["model"] = {}, f"{type(exc).__name__}: {exc}"
        arrays.update({f"model/{k}": np.asarray(v) for k, v in model.items() if not isinstance(v, str)})
        item["model_strings"] = {k: v for k, v in model.items() if isinstance(v, str)}
        np.savez_compressed(self._dir(task) / item["file"], **arrays)
        entry["extractors"].append(item)
        self._spatial[(task, extractor.spec)] = {i: s for i, s in spatial.items() if s}
        self._write_index()

    def _draws(self, task: str, trial: int, method: str, classifier: str) -> bool:
        return task in self.index["tasks"] and trial == 0 and method == "none" and classifier == self.classifier

    def _maps(self, task: str, extractor: Any, output: str) -> dict:
        return {i: s[output] for i, s in self._spatial.get((task, extractor.spec), {}).items() if output in s}

    def wants_model(self, task: str, extractor: Any, output: str, trial: int, method: str, classifier: str) -> bool:
        """Whether :meth:`after_evaluation` will draw this evaluation's probe (it needs the fitted model)."""
        return self._draws(task, trial, method, classifier) and bool(self._maps(task, extractor, output))

    def after_evaluation(self, task: str, extractor: Any, output: str, trial: int, method: str, classifier: str,
                         model: Any, test_uids: Sequence[str], y_true: np.ndarray, y_pred: np.ndarray) -> None:
        """Keep which trial-0 test images were wrong, and the probe and its CAMs for a spatial output."""
        if not self._draws(task, trial, method, classifier):
            return
        self._wrong[task].update(u for u, t, p in zip(test_uids, y_true, y_pred) if t != p)
        maps = self._maps(task, extractor, output)
        if not maps or model is None:
            return
        from featbench.classifier import original_space_weights

        entry = self.index["tasks"][task]
        try:
            weights = original_space_weights(model)
            if weights is None:
                return
            W, b = weights
            arrays = {"W": W.astype(np.float32), "b": b.astype(np.float32)}
            for i, A in maps.items():
                arrays[f"cam/{i}"] = np.einsum("cd,dhw->chw", W, A.astype(np.float64)).astype(np.float32)
        except Exception as exc:  # a picture must never stop a run
            entry.setdefault("probe_errors", {})[f"{extractor.spec}@{output}"] = f"{type(exc).__name__}: {exc}"
            return
        name = f"probe-{len(entry['probes']):02d}-{_slug(extractor.spec)}.npz"
        np.savez_compressed(self._dir(task) / name, **arrays)
        entry["probes"].append({"extractor": extractor.spec, "layer": output, "file": name})
        self._write_index()

    def finish_task(self, task: str) -> None:
        """Thumbnails of the test images some variant got wrong (a seeded choice beyond ``THUMB_CAP``)."""
        from featbench.datasets.images import ImageDecodeError

        if task not in self.index["tasks"]:
            return
        entry = self.index["tasks"][task]
        wrong = [r for r in self._test.pop(task, []) if r.uid in self._wrong.get(task, ())]
        if not entry["images"]:  # not an image dataset (see start_task): nothing to show
            wrong = []
        if len(wrong) > THUMB_CAP:
            keep = np.sort(np.random.default_rng(self.seed).choice(len(wrong), THUMB_CAP, replace=False))
            entry["thumbs_left_out"] = len(wrong) - THUMB_CAP
            wrong = [wrong[i] for i in keep]
        folder = self._dir(task) / "thumbs"
        folder.mkdir(exist_ok=True)
        for rec in wrong:
            name = f"thumbs/{rec.uid[:16]}.jpg"
            if rec.uid in entry["thumbs"]:
                continue
            try:
                (folder.parent / name).write_bytes(jpeg_bytes(rec.load(), THUMB_SIDE, quality=80))
            except ImageDecodeError:
                continue
            entry["thumbs"][rec.uid] = name
        self._pixels.pop(task, None)
        self._spatial = {k: v for k, v in self._spatial.items() if k[0] != task}
        self._write_index()

    def _write_index(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.root / "index.json", json.dumps(self.index, indent=1).encode())
