"""Report galleries: what each extractor sees on a few test images, and which images it gets wrong.

Two sections, registered like the built-in ones (:func:`~featbench.reports.sections.register_section`):

* ``gallery-sees`` (order 95): per task, the run's fixed gallery images with SIFT/SURF/ORB keypoints
  (scale and orientation), dense grids, HOG cell glyphs, and for each CNN the activation map of
  every reported layer (at most ``MAX_LAYER_MAPS``, spread over depth) and the class activation
  map of the fitted linear probe for the predicted and the true class; then each CNN's first
  convolution filters.
* ``gallery-failures`` (order 105): per task, for the best and the worst extractor (each at its
  best layer), thumbnails of the test images it misclassifies and of those only one of them gets right.

Everything is drawn from the run folder's ``gallery/`` and ``predictions.jsonl`` (see
:mod:`.gallery_data`); nothing is extracted again. Pictures are embedded in report.html as
WebP (``report.md`` links the PNGs in ``figures/``) within a size budget per section
(``SEES_BUDGET``, ``FAILURES_BUDGET``; together at most 10 MB, so that a quick-shared report stays
under 15 MB): a picture over the budget left is redrawn smaller, and dropped with a note if it
still does not fit.
"""
from __future__ import annotations

import base64
import dataclasses
import io
from pathlib import Path
from typing import Any

import numpy as np

from . import figures as figs
from . import gallery_figures as gf
from .gallery_data import GALLERY_DIR, load_arrays, per_image, read_index
from .section_api import Figure, ReportContext, Section, register_section
from .tables import esc, pct, strip_layers

SEES_BUDGET = 7_000_000
FAILURES_BUDGET = 3_000_000
MAX_LAYER_MAPS = 4
MAX_THUMBS = 24


@dataclasses.dataclass
class TaskGallery:
    run: Any  # featbench.reports.data.Run
    task: str
    entry: dict[str, Any]

    @property
    def folder(self) -> Path:
        return self.run.path / GALLERY_DIR / self.entry["dir"]

    def rel(self, name: str) -> str:
        return f"{GALLERY_DIR}/{self.entry['dir']}/{name}"

    def photo(self, i: int) -> np.ndarray:
        return gf.read_rgb((self.folder / self.entry["images"][i]["file"]).read_bytes())

    def source(self, files: str, record: str = "") -> str:
        """Caption text: which command, run and records (paths relative to the run folder) a picture comes from."""
        cmd = self.run.meta.get("command") or "featbench run"
        return (f"From run {self.run.run_id} ({self.run.path.name}/), command: {cmd}. Records: {files}"
                + (f"; predictions.jsonl ({record})" if record else "") + ".")


def task_galleries(ctx: ReportContext) -> tuple[list[TaskGallery], list[str]]:
    """The first run's gallery of every task (later runs' galleries of the same task are noted)."""
    found: dict[str, TaskGallery] = {}
    notes = []
    for run in ctx.runs.runs:
        try:
            index = read_index(run.path)
        except Exception as exc:  # an unreadable index must not break the report
            notes.append(f"{run.path}/{GALLERY_DIR}/index.json: unreadable ({exc})")
            continue
        for task, entry in ((index or {}).get("tasks") or {}).items():
            if task in found:
                notes.append(f"{task}: the gallery of run {found[task].run.run_id} is shown, not {run.run_id}'s")
            else:
                found[task] = TaskGallery(run, task, entry)
    return list(found.values()), notes


def predictions(g: TaskGallery, extractor: str, layer: str) -> dict[str, Any] | None:
    """Trial-0 predictions of ``extractor`` (without @layers) at ``layer`` (method none, the gallery's
    classifier) that carry image uids, as ``{"uids", "y_true", "y_pred", "classes", "record"}``."""
    for p in g.run.predictions():
        if (p.get("task") == g.task and int(p.get("trial", -1)) == 0 and (p.get("method") or "none") == "none"
                and p.get("classifier") == g.entry["classifier"] and (p.get("layer") or "") == (layer or "")
                and strip_layers(p.get("extractor", "")) == strip_layers(extractor) and p.get("uids")):
            record = (f"task {g.task}, trial 0, extractor {p['extractor']}" + (f", layer {layer}" if layer else "")
                      + f", method none, classifier {p['classifier']}")
            return {"uids": p["uids"], "relpaths": p.get("relpaths") or p["uids"], "y_true": np.asarray(p["y_true"]), "y_pred": np.asarray(p["y_pred"]),
                    "classes": p["classes"], "record": record}
    return None


class Budget:
    """Embeds figures as WebP data URIs until ``limit`` bytes are used; PNGs always go to figures/."""

    def __init__(self, ctx: ReportContext, limit: int) -> None:
        self.ctx, self.left, self.dropped = ctx, limit, []

    def embed(self, fig, name: str, alt: str, caption: str) -> tuple[str, str]:
        from PIL import Image

        png = figs.png_bytes(fig)
        folder = self.ctx.out / "figures"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.png").write_bytes(png)
        md = f"![{alt}](figures/{name}.png)\n\n_{caption}_"
        img = Image.open(io.BytesIO(png)).convert("RGB")
        for scale, quality in ((1.0, 80), (0.7, 70), (0.5, 60)):
            small = img if scale == 1.0 else img.resize((int(img.width * scale), int(img.height * scale)),
                                                        Image.Resampling.LANCZOS)
            buf = io.BytesIO()
            small.save(buf, format="WEBP", quality=quality, method=4)
            data = buf.getvalue()
            if len(data) <= self.left:
                break
        else:
            self.dropped.append(name)
            return (f"<p class='absent'>{esc(alt)}: left out of this page to keep it within its size budget; "
                    f"see figures/{esc(name)}.png.</p>", md)
        self.left -= len(data)
        uri = "data:image/webp;base64," + base64.b64encode(data).decode()
        self.ctx.figures.append(Figure(name=name, alt=alt, uri=uri, relpath=f"figures/{name}.png"))
        note = "" if scale == 1.0 else f" (shown at {int(scale * 100)} % to fit the page's size budget)"
        # at most natural size; on a phone at least 640 px wide, scrolling sideways (shrunk to 390 px, the
        # captions under the panels and thumbnails could not be read)
        style = f"width:100%;height:auto;max-width:{small.width}px;min-width:{min(small.width, 640)}px"
        return (f"<figure><div style='overflow-x:auto'><img alt='{esc(alt)}' src='{uri}' loading='lazy' "
                f"style='{style}'></div>"
                f"<figcaption>{esc(caption + note)}</figcaption></figure>", md)


def _title(kind: str, spec: str, vis: dict[str, np.ndarray]) -> str:
    if kind == "keypoints":
        n, total = min(len(vis["kps"]), gf.KEYPOINTS_DRAWN), int(vis.get("n_total", len(vis["kps"])))
        return f"{gf.label(spec, 14)}: {total} kps" + (f" ({n} drawn)" if n < total else "")
    if kind == "dense-grid":
        return f"{gf.label(spec, 14)}: {len(vis['centres'])} × {len(vis['sizes'])}"
    return gf.label(spec, 22)


def _classical_figure(g: TaskGallery, items: list[tuple[dict, dict]], photos: list[np.ndarray]):
    fig, axes = gf.grid(len(photos), 1 + len(items), f"{g.task}: what the classical extractors see")
    for i, photo in enumerate(photos):
        gf.draw_photo(axes[i, 0], photo, gf.label(g.entry["images"][i]["label"], 20))
        for j, (item, arrays) in enumerate(items, start=1):
            vis = per_image(arrays, i)
            kind = (item["strings"][i] if i < len(item["strings"]) else {}).get("kind", "")
            draw = {"keypoints": gf.draw_keypoints, "dense-grid": gf.draw_dense_grid, "hog-cells": gf.draw_hog}.get(kind)
            if draw is None or not vis:
                axes[i, j].set_title(f"{gf.label(item['extractor'], 14)}: nothing kept", fontsize=7)
                gf.off(axes[i, j])
                continue
            draw(axes[i, j], photo, vis, _title(kind, item["extractor"], vis))
    return gf.finish(fig)


def _cnn_figure(g: TaskGallery, item: dict, arrays: dict, probe: dict | None, n: int):
    """Rows: images; columns: the crop, layer maps (spread over depth), CAM of predicted and true class."""
    layers = [l for l in (item["strings"][0].get("layers", "").split(",") if item["strings"] else []) if l]
    if len(layers) > MAX_LAYER_MAPS:
        layers = [layers[round(k * (len(layers) - 1) / (MAX_LAYER_MAPS - 1))] for k in range(MAX_LAYER_MAPS)]
    cams = load_arrays(g.folder / probe["file"]) if probe else {}
    preds = predictions(g, item["extractor"], probe["layer"]) if probe else None
    pred_of = dict(zip(preds["uids"], preds["y_pred"].tolist())) if preds else {}
    classes = g.entry["classes"]
    cols = 1 + len(layers) + (2 if probe else 0)
    fig, axes = gf.grid(n, cols, f"{g.task}: {item['extractor']}, activation maps"
                        + (f" and CAM at {probe['layer']}" if probe else ""))
    for i in range(n):
        vis = per_image(arrays, i)
        info = g.entry["images"][i]
        crop = vis.get("input")
        if crop is None:
            for ax in axes[i]:
                gf.off(ax)
            continue
        gf.draw_photo(axes[i, 0], crop, f"{gf.label(info['label'], 18)} (crop)")
        for j, layer in enumerate(layers, start=1):
            if f"map:{layer}" in vis:
                gf.draw_heat(axes[i, j], crop, vis[f"map:{layer}"], gf.label(layer, 20))
            else:
                gf.off(axes[i, j])
        if probe and f"cam/{i}" in cams:
            cam = cams[f"cam/{i}"]
            true = classes.index(info["label"])
            pred = pred_of.get(info["uid"], int(np.argmax(cam.mean((1, 2)) + cams["b"])))
            mark = "✓" if pred == true else "✗"
            gf.draw_heat(axes[i, -2], crop, cam[pred], f"CAM pred {gf.label(classes[pred], 12)} {mark}", "jet")
            if pred != true:
                gf.draw_heat(axes[i, -1], crop, cam[true], f"CAM true {gf.label(classes[true], 12)}", "jet")
            else:  # the true class's map is the one just drawn: show the runner-up's evidence instead
                scores = cam.mean((1, 2)) + cams["b"]
                second = int(np.argsort(-scores)[1]) if len(scores) > 1 else true
                gf.draw_heat(axes[i, -1], crop, cam[second], f"CAM 2nd {gf.label(classes[second], 12)}", "jet")
    return gf.finish(fig)


@register_section("gallery-sees", order=95)
def gallery_sees(ctx: ReportContext) -> Section | None:
    """What each extractor sees on a task's gallery images: keypoints, grids, HOG cells, CNN maps and CAMs."""
    title = "What each extractor sees"
    galleries, notes = task_galleries(ctx)
    if not galleries:
        return Section("gallery-sees", title, "<p class='absent'>No run folder has gallery/ (written by featbench "
                       "run since the gallery was added).</p>", "_No run folder has gallery/._")
    budget = Budget(ctx, SEES_BUDGET)
    intro = ("A fixed, seeded choice of each task's test images (trial 0; one or two per class), as each extractor "
             "sees them. Keypoints: circles of the keypoint's size, a radius along its orientation (strongest "
             "first). Dense extractors: every grid centre, and their patch sizes around one centre. HOG: the image "
             "squashed to HOG's square, one line per orientation bin along the edge it stands for, brighter for "
             "larger block-normalised values. CNNs: the crop the network sees, each layer's channel-averaged "
             "activation (bright = strong), and the class activation map of the linear probe on the deepest "
             "reported convolutional map (Zhou et al. 2016) for the predicted class (✓ right, ✗ wrong) and the true "
             "class, or, when the prediction is right, the runner-up class; each map is scaled to its own range.")
    html, md = [f"<p>{esc(intro)}</p>"] + [f"<p class='note'>{esc(n)}</p>" for n in notes], [intro]
    filters_done: set[str] = set()
    filter_parts: list[tuple[str, str]] = []
    for t, g in enumerate(galleries):
        n = len(g.entry["images"])
        if not n:
            continue
        photos = [g.photo(i) for i in range(n)]
        html.append(f"<h3>{esc(g.task)}</h3>")
        md.append(f"### {g.task}")
        loaded = [(item, load_arrays(g.folder / item["file"])) for item in g.entry["extractors"]]
        classical = [(item, a) for item, a in loaded if item["family"] != "cnn"]
        if classical:
            fig = _classical_figure(g, classical, photos)
            files = ", ".join(g.rel(item["file"]) for item, _ in classical)
            cap = g.source(f"{g.rel('images/')} and {files}")
            h, m = budget.embed(fig, f"gallery-sees-{t}-classical", f"{g.task}: what the classical extractors see", cap)
            html.append(h)
            md.append(m)
        for k, (item, arrays) in enumerate([(i, a) for i, a in loaded if i["family"] == "cnn"]):
            probe = next((p for p in g.entry["probes"] if p["extractor"] == item["extractor"]), None)
            fig = _cnn_figure(g, item, arrays, probe, n)
            record = None
            if probe:
                p = predictions(g, item["extractor"], probe["layer"])
                record = p["record"] if p else None
            cap = g.source(g.rel(item["file"]) + (f" and {g.rel(probe['file'])}" if probe else ""), record or "")
            if not probe:
                cap += " No class activation map: the run kept no probe for this extractor (its deepest layer has no " \
                       "spatial map, or pool/l2/aug make the score not a mean over positions)."
            h, m = budget.embed(fig, f"gallery-sees-{t}-cnn{k}", f"{g.task}: what {item['extractor']} sees", cap)
            html.append(h)
            md.append(m)
            model = per_image(arrays, "model")
            spec = strip_layers(item["extractor"])
            if "filters" in model and spec not in filters_done:
                filters_done.add(spec)
                module = item.get("model_strings", {}).get("module", "first convolution")
                fig = gf.filters_figure(model["filters"], f"{spec}: first convolution ({module}), "
                                                          f"{len(model['filters'])} filters")
                cap = g.source(g.rel(item["file"]) + " (model/filters)")
                filter_parts.append(budget.embed(fig, f"gallery-filters-{len(filters_done) - 1}",
                                                 f"{spec}: first convolution filters", cap))
    if filter_parts:
        html.append("<h3>First convolution filters</h3>")
        md.append("### First convolution filters")
        for h, m in filter_parts:
            html.append(h)
            md.append(m)
    if budget.dropped:
        note = f"Left out of the HTML for size (budget {SEES_BUDGET / 1e6:.0f} MB): {', '.join(budget.dropped)}."
        html.append(f"<p class='warn'>{esc(note)}</p>")
        md.append(note)
    return Section("gallery-sees", title, "".join(html), "\n\n".join(md))


def best_and_worst(ctx: ReportContext, task: str, classifier: str):
    prim = ctx.agg[ctx.agg["primary"] & ctx.agg["method"].eq("none") & ctx.agg["task"].eq(task)
                   & ctx.agg["classifier"].eq(classifier)]
    per_ex = prim.sort_values("acc_mean", ascending=False).drop_duplicates(["extractor"])
    return (per_ex.iloc[0], per_ex.iloc[-1]) if len(per_ex) >= 2 else (None, None)


@register_section("gallery-failures", order=105)
def gallery_failures(ctx: ReportContext) -> Section | None:
    """Test images the best and the worst extractor of each task get wrong, and those only one gets right."""
    title = "Failure gallery: best and worst extractor"
    galleries, _ = task_galleries(ctx)
    budget = Budget(ctx, FAILURES_BUDGET)
    intro = (f"For each task, the best and the worst extractor (each at its best layer, method none): the test "
             f"images of trial 0 each gets wrong, and those only one of them gets right (at most {MAX_THUMBS} "
             f"each, a seeded choice). Captions: true class, then the predicted one.")
    html, md = [f"<p>{esc(intro)}</p>"], [intro]
    shown = 0
    for t, g in enumerate(galleries):
        best, worst = best_and_worst(ctx, g.task, g.entry["classifier"])
        if best is None:
            continue
        pb, pw = predictions(g, best["extractor"], best["layer"]), predictions(g, worst["extractor"], worst["layer"])
        if pb is None or pw is None:
            continue
        classes = pb["classes"]
        wb = dict(zip(pb["uids"], zip(pb["y_true"], pb["y_pred"])))
        ww = dict(zip(pw["uids"], zip(pw["y_true"], pw["y_pred"])))
        common = [u for u in pb["uids"] if u in ww]
        relpath = dict(zip(pw["uids"], pw["relpaths"])) | dict(zip(pb["uids"], pb["relpaths"]))
        groups = [
            (f"best, {best['label']} ({pct(best['acc_mean'])} % over trials), wrong in trial 0",
             [u for u in pb["uids"] if wb[u][0] != wb[u][1]], wb),
            (f"worst, {worst['label']} ({pct(worst['acc_mean'])} % over trials), wrong in trial 0",
             [u for u in pw["uids"] if ww[u][0] != ww[u][1]], ww),
            ("only the best gets right (worst's prediction shown)",
             [u for u in common if wb[u][0] == wb[u][1] and ww[u][0] != ww[u][1]], ww),
            ("only the worst gets right (best's prediction shown)",
             [u for u in common if ww[u][0] == ww[u][1] and wb[u][0] != wb[u][1]], wb),
        ]
        html.append(f"<h3>{esc(g.task)}</h3>")
        md.append(f"### {g.task}")
        rng = np.random.default_rng(int(g.entry.get("seed", 0)))
        for k, (what, uids, truth) in enumerate(groups):
            head = f"{what}: {len(uids)} of {len(common)} test images"
            if not uids:
                html.append(f"<p>{esc(head)}.</p>")
                md.append(head + ".")
                continue
            chosen = [uids[i] for i in sorted(rng.permutation(len(uids))[:MAX_THUMBS])]
            items = []
            for u in chosen:
                rel = g.entry["thumbs"].get(u)
                pixels = gf.read_rgb((g.folder / rel).read_bytes()) if rel and (g.folder / rel).is_file() else None
                tr, pr = truth[u]
                items.append((pixels, f"{gf.label(classes[tr], 13)}\n→ {gf.label(classes[pr], 13)}"))
            fig = gf.thumbs_figure(items, f"{g.task}: {head}" + (f" ({len(chosen)} shown)" if len(chosen) < len(uids) else ""))
            cap = g.source(g.rel("thumbs/"), f"{pb['record']}; {pw['record']}")
            h, m = budget.embed(fig, f"gallery-failures-{t}-{k}", f"{g.task}: {what}", cap)
            files = ", ".join(relpath[u] for u in uids)
            html.append(h + f"<details><summary>list the {len(uids)} files</summary><p class='small'>{esc(files)}</p>"
                        "</details>")
            md.append(m + f"\n\nFiles: {files}")
            shown += 1
    if not shown:
        return Section("gallery-failures", title, "<p class='absent'>Needs a run with gallery/ and predictions "
                       "with image uids, and a task with at least two extractors.</p>",
                       "_Needs a run with gallery/ and predictions with image uids, and a task with at least two "
                       "extractors._")
    if budget.dropped:
        note = f"Left out of the HTML for size (budget {FAILURES_BUDGET / 1e6:.0f} MB): {', '.join(budget.dropped)}."
        html.append(f"<p class='warn'>{esc(note)}</p>")
        md.append(note)
    return Section("gallery-failures", title, "".join(html), "\n\n".join(md))
