"""Galleries: the extractors' visualise hooks, the probe mapped back to raw features, and a real run
(texture photos; HOG, SURF BoW, EfficientNet-Lite0) whose gallery/ and report pictures come from its
own records; the Chromium screenshot of the gallery sections."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

import featbench.features as F
from featbench.classifier import fit_evaluate, original_space_weights
from featbench.reports import build_report
from featbench.reports.gallery_data import load_arrays, per_image, read_index
from featbench.reports.screenshot import find_chromium, screenshot
from featbench.runner import RunOptions, Runner
from featbench.suite import Suite, TaskSpec

from helpers import make_texture_folder

CNN = "cnn:tf_efficientnet_lite0@blocks.5+pre_logits"


def test_hog_cells_point_along_the_gradient():
    x = np.arange(128)
    stripes = np.repeat((127 + 120 * np.sin(x / 3.0)).astype(np.uint8)[None, :], 128, axis=0)  # varies along x
    vis = F.create("hog").visualise(np.dstack([stripes] * 3))
    assert vis["kind"] == "hog-cells" and vis["cells"].shape == (16, 16, 9)
    strongest = vis["cells"][4:12, 4:12].sum((0, 1)).argmax()
    assert strongest in (0, 8)  # gradient along x: orientation 0 / 180 degrees


@pytest.mark.parametrize("spec,kind", [("surf-bow", "keypoints"), ("sift-bow", "keypoints"),
                                       ("sift-dense-bow", "dense-grid")])
def test_local_extractors_show_keypoints_with_scale_and_orientation(astronaut, spec, kind):
    vis = F.create(spec).visualise(astronaut)
    assert vis["kind"] == kind and tuple(vis["shape"]) == (300, 300)
    if kind == "keypoints":
        kps = vis["kps"]
        assert 50 < len(kps) <= 400 and (kps[:, 2] > 0).all() and ((kps[:, 3] >= 0) & (kps[:, 3] < 360)).all()
        assert len(np.unique(kps[:, 3].round())) > 20  # real orientations, not one fixed angle
    else:
        assert len(vis["centres"]) > 1000 and list(vis["sizes"]) == [16, 24, 32, 40]


def test_default_visualise_is_empty():
    from featbench.features.base import Extractor

    assert Extractor().visualise(np.zeros((8, 8, 3), np.uint8)) == {} and Extractor().visualise_model() == {}


@pytest.mark.parametrize("kind", ["logreg", "svm"])
@pytest.mark.parametrize("k,d", [(3, 300), (2, 12)])
def test_probe_weights_in_raw_feature_space_reproduce_the_decisions(kind, k, d):
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(k), 20)
    X = rng.normal(size=(len(y), d)) * rng.uniform(0.1, 5, d) + y[:, None] * 0.4 + 3  # unequal scales, offset
    ev = fit_evaluate(X, y, X, y, kind=kind)
    W, b = original_space_weights(ev.model)
    scores = X @ W.T + b
    assert W.shape == (k, d) and (scores.argmax(1) == ev.y_pred).all()
    if k > 2:
        np.testing.assert_allclose(scores, ev.model.decision_function(X), rtol=1e-4, atol=1e-4)


# -- a real run ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gallery_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("gallery")
    make_texture_folder(base / "data" / "textures")
    suite = Suite(name="gallery-test", tasks=[TaskSpec(name="textures")],
                  extractors=["hog:size=32", "surf-bow:k=16", CNN])
    options = RunOptions(out=base / "run", data_roots=[str(base / "data")], cache_dir=str(base / "cache"),
                         quiet=True, batch_size=8, device="cpu")
    Runner(suite, options, command=["featbench", "run", "gallery-test"]).run()
    return base / "run"


@pytest.mark.slow
def test_run_keeps_gallery_material(gallery_run):
    index = read_index(gallery_run)
    entry = index["tasks"]["textures"]
    assert [im["label"] for im in entry["images"]] == ["brick", "brick", "grass", "grass", "gravel", "gravel"]
    kinds = {item["extractor"]: {s.get("kind") for s in item["strings"]} for item in entry["extractors"]}
    assert kinds == {"hog:size=32": {"hog-cells"}, "surf-bow:k=16": {"keypoints"}, CNN: {"cnn"}}
    cnn = next(item for item in entry["extractors"] if item["extractor"] == CNN)
    arrays = load_arrays(gallery_run / "gallery" / entry["dir"] / cnn["file"])
    assert per_image(arrays, "model")["filters"].shape == (32, 3, 3, 3)
    assert per_image(arrays, 0)["input"].shape == (224, 224, 3) and per_image(arrays, 0)["map:blocks.5"].ndim == 2
    # the CAM spreads the run's own probe over the image: its mean plus the bias gives the recorded prediction
    (probe,) = entry["probes"]
    assert (probe["extractor"], probe["layer"]) == (CNN, "pre_logits")
    cams = load_arrays(gallery_run / "gallery" / entry["dir"] / probe["file"])
    preds = [json.loads(line) for line in (gallery_run / "predictions.jsonl").read_text().splitlines()]
    p = next(p for p in preds if p["extractor"] == CNN and p["layer"] == "pre_logits" and p["trial"] == 0)
    assert len(p["uids"]) == len(p["y_true"]) == len(p["relpaths"])
    pred_of = dict(zip(p["uids"], p["y_pred"]))
    for i, im in enumerate(entry["images"]):
        logits = cams[f"cam/{i}"].mean((1, 2)) + cams["b"]
        assert int(np.argmax(logits)) == pred_of[im["uid"]]
    # a thumbnail for every trial-0 test image some variant got wrong
    wrong = {u for q in preds if q["trial"] == 0 for u, t, y in zip(q["uids"], q["y_true"], q["y_pred"]) if t != y}
    assert set(entry["thumbs"]) == wrong
    assert all((gallery_run / "gallery" / entry["dir"] / f).is_file() for f in entry["thumbs"].values())


@pytest.mark.slow
def test_a_rerun_draws_the_same_probe_from_the_evaluation_cache(gallery_run):
    """The re-run reads every evaluation back (the probe's weights included) and draws the same CAMs."""
    base = gallery_run.parent
    suite = Suite(name="gallery-test", tasks=[TaskSpec(name="textures")],
                  extractors=["hog:size=32", "surf-bow:k=16", CNN])
    options = RunOptions(out=base / "rerun", data_roots=[str(base / "data")], cache_dir=str(base / "cache"),
                         quiet=True, batch_size=8, device="cpu", report=False)
    Runner(suite, options, command=["featbench", "run", "gallery-test"]).run()
    rows = [json.loads(line) for line in (base / "rerun" / "results.jsonl").read_text().splitlines()]
    assert rows and all(r["fit_reused"] for r in rows)
    first, again = (read_index(run)["tasks"]["textures"] for run in (gallery_run, base / "rerun"))
    (p1,), (p2,) = first["probes"], again["probes"]
    a1, a2 = (load_arrays(run / "gallery" / e["dir"] / p["file"])
              for run, e, p in ((gallery_run, first, p1), (base / "rerun", again, p2)))
    assert sorted(a1) == sorted(a2)
    for name in a1:
        np.testing.assert_array_equal(a1[name], a2[name])


@pytest.fixture(scope="module")
def gallery_report(gallery_run, tmp_path_factory):
    return build_report([gallery_run], tmp_path_factory.mktemp("gallery-report"))


@pytest.mark.slow
def test_report_galleries_come_from_the_run(gallery_run, gallery_report):
    html = gallery_report.read_text()
    md = (gallery_report.parent / "report.md").read_text()
    for sid in ("gallery-sees", "gallery-failures"):
        assert f'<section id="{sid}">' in html and f'<a id="{sid}"></a>' in md
    assert "failed to build" not in html
    assert len(re.findall(r"src='data:image/webp;base64,", html)) >= 4
    assert "figures/gallery-sees-0-classical.png" in md and (gallery_report.parent / "figures" /
                                                               "gallery-sees-0-cnn0.png").is_file()
    run_id = json.loads((gallery_run / "run.json").read_text())["run_id"]
    assert f"From run {run_id}" in html and "gallery/00-textures/" in html
    # the failure gallery lists exactly the files the worst extractor got wrong in trial 0
    preds = [json.loads(line) for line in (gallery_run / "predictions.jsonl").read_text().splitlines()]
    acc = {(p["extractor"], p["layer"]): np.mean(np.equal(p["y_true"], p["y_pred"])) for p in preds if p["trial"] == 0}
    assert gallery_report.stat().st_size < 15_000_000
    worst = min(acc, key=acc.get)
    p = next(p for p in preds if (p["extractor"], p["layer"]) == worst and p["trial"] == 0)
    wrong = [r for r, t, y in zip(p["relpaths"], p["y_true"], p["y_pred"]) if t != y]
    if wrong:
        assert "Files: " + ", ".join(wrong) in md


@pytest.mark.slow
def test_gallery_over_budget_is_dropped_with_a_note(gallery_run, tmp_path, monkeypatch):
    from featbench.reports import gallery

    monkeypatch.setattr(gallery, "SEES_BUDGET", 20_000)
    html = build_report([gallery_run], tmp_path).read_text()
    sees = html.split('<section id="gallery-sees">')[1].split("</section>")[0]
    assert "Left out of the HTML for size" in sees and (tmp_path / "figures" / "gallery-sees-0-cnn0.png").is_file()


@pytest.mark.slow
@pytest.mark.skipif(find_chromium() is None, reason="chromium not on PATH (Debian package 'chromium')")
def test_chromium_renders_the_galleries(gallery_report, tmp_path):
    """The gallery sections alone (same page head), rendered: the WebP pictures decode and fill the page."""
    from PIL import Image

    html = gallery_report.read_text()
    head, body = html.split("<main>")[0], html.split("<main>")[1]
    sections = re.findall(r'<section id="gallery-[a-z]+">.*?</section>', body, re.S)
    page = tmp_path / "gallery.html"
    page.write_text(head + "<main>" + "".join(sections) + "</main></body></html>")
    for width, height in ((1280, 2400), (390, 1600)):
        png = screenshot(page, tmp_path / f"g{width}.png", width=width, height=height)
        rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
        pictures = rgb.min(2) < 200  # photos, glyphs and maps, not text on white (text covers a few %)
        heat = (rgb.max(2) - rgb.min(2)) > 60  # the coloured activation maps and CAMs
        assert pictures.mean() > 0.15 and heat.mean() > 0.005, (width, pictures.mean(), heat.mean())


def test_no_probe_weights_for_a_classifier_that_is_not_linear():
    y = np.repeat(np.arange(3), 10)
    X = np.random.default_rng(0).normal(size=(30, 5)) + y[:, None]
    assert original_space_weights(fit_evaluate(X, y, X, y, kind="1nn").model) is None
