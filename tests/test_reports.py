"""Reports, from synthetic run folders: self-contained HTML, sections, merging, bold best, LaTeX,
anchors, comparability, the results corpus and RESULTS.md drift, and a Chromium screenshot."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from featbench.reports import build_report
from featbench.reports import corpus as corpus_mod
from featbench.records import SCHEMA_V1_COLUMNS
from featbench.reports.embedding import read_features_sample, write_features_sample
from featbench.reports.screenshot import find_chromium, screenshot

REPO = Path(__file__).resolve().parent.parent

TASKS = {  # task: (family, protocol, dataset_id, trials, methods, n_classes)
    "caltech101_mini": ("object", "per-class:train=15,test=10", "c101aaaa", 3, ["none"], 4),
    "cub200_mini": ("fine-grained", "given:test=test,train=train", "cubbbbbb", 1, ["none"], 4),
    "scene15_mini": ("scene", "per-class:train=10,test=10", "s15ccccc", 2, ["none"], 3),
    "office_caltech10:amazon->webcam": ("domain", "source-only-full", "officeee", 1, ["none", "coral"], 4),
    "office_caltech10:dslr->webcam": ("domain", "source-only-full", "officeee", 1, ["none", "coral"], 4),
}
CNN_LAYERS = ["blocks.2", "blocks.4", "pre_logits"]
EXTRACTORS = [  # spec, family, layers, base accuracy, images/s on CPU
    ("hog", "classical", [""], 0.40, 300.0),
    ("surf-bow", "classical", [""], 0.35, 40.0),
    ("cnn:tf_efficientnet_lite0", "cnn", CNN_LAYERS, 0.60, 25.0),
]


def _acc(spec: str, layer: str, task: str, trial: int, method: str, device: str) -> float:
    base = dict((e[0], e[3]) for e in EXTRACTORS).get(spec, 0.6)
    if layer in CNN_LAYERS:
        base += 0.08 * CNN_LAYERS.index(layer)  # deeper is better: pre_logits best
    base += 0.05 * (method == "coral") - 0.1 * ("->" in task) + 0.01 * trial
    base += 0.002 * (device != "cpu")
    return float(np.clip(base + 0.01 * (sum(map(ord, task)) % 5), 0, 1))


def make_run(folder: Path, run_id: str, *, device: str = "cpu", tasks: dict | None = None,
             extractors=EXTRACTORS, suite: str = "quick-shared", status: str = "complete",
             gpus: tuple[str, ...] = (), skipped: tuple = (), sample: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    tasks = TASKS if tasks is None else tasks
    rows, preds = [], []
    rng = np.random.default_rng(abs(hash(run_id)) % 2**32)
    for task, (family, protocol, dsid, trials, methods, k) in tasks.items():
        for spec, fam, layers, _, speed in extractors:
            for trial in range(trials):
                for layer in layers:
                    for method in methods:
                        acc = _acc(spec, layer, task, trial, method, device)
                        row = {c: None for c in SCHEMA_V1_COLUMNS}
                        row.update(schema_version=1, featbench_version="0.1.0", run_id=run_id, suite=suite, task=task,
                                   family=family, dataset=task.split(":")[0], dataset_id=dsid, protocol=protocol,
                                   method=method, trial=trial, seed=trial, extractor=spec, extractor_family=fam,
                                   layer=layer, extractor_config=re.sub(r"@[^:]*", "", f"cfg-{spec}")[:16], weights="package" if fam == "cnn" else "",
                                   classifier="logreg", C=1.0, cv_score=acc, top1=acc, mean_class_acc=acc - 0.01,
                                   n_train=40, n_test=40, dim=128, extract_s=1.0,
                                   img_per_s=speed * (20 if device != "cpu" and fam == "cnn" else 1), fit_s=0.1,
                                   device=device)
                        rows.append(row)
                        n = 10 * k
                        y_true = np.repeat(np.arange(k), 10)
                        y_pred = np.where(rng.random(n) < acc, y_true, rng.integers(0, k, n))
                        preds.append({"task": task, "trial": trial, "extractor": spec, "layer": layer, "method": method,
                                      "classifier": "logreg", "classes": [f"class{i}" for i in range(k)],
                                      "y_true": y_true.tolist(), "y_pred": y_pred.tolist()})
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds))
    meta = {
        "command": f"featbench run {suite} --out {folder}", "started": "2026-01-01T00:00:00+00:00",
        "featbench_version": "0.1.0", "schema_version": 1, "git_commit": "0123456789abcdef", "run_id": run_id,
        "status": status, "seed": 0, "device_requested": device, "data_roots": ["/data"], "cache_dir": None,
        "versions": {"python": "3.11", "torch": "2.x"},
        "machine": {"hostname": "test", "cpu": "Test CPU", "cpu_count": 2, "torch_threads": 2, "gpus": list(gpus),
                    "platform": "Linux"},
        "timings_s": {t: 1.0 for t in tasks} | {"total": 5.0},
        "tasks": {t: {"dataset": {"name": t.split(":")[0], "identity": v[2], "images": 100, "classes": v[5],
                                  "root": "/data"}, "protocol": v[1], "trials": v[3], "family": v[0],
                      "methods": v[4], "notes": []} for t, v in tasks.items()},
        "extractors": {e[0]: {"spec": e[0], "name": e[0].split(":")[0], "version": "1", "params": {},
                              **({"weights": {"source": "package", "sha256": "ab" * 32, "origin": "pkg"}}
                                 if e[1] == "cnn" else {})} for e in extractors},
        "skipped_images": [{"relpath": p, "path": p, "reason": "cannot decode"} for p in skipped],
        "cache": {"hits": 0, "misses": 0},
    }
    (folder / "run.json").write_text(json.dumps(meta, indent=1))
    if sample:
        k, n = 3, 45
        labels = np.repeat(np.arange(k), n // k)
        r = np.random.default_rng(0)
        feats = [(spec, layer, fam, r.normal(size=(n, 16)) + labels[:, None] * (1 + i))
                 for i, (spec, fam, layer) in enumerate([("hog", "classical", ""),
                                                         ("cnn:tf_efficientnet_lite0", "cnn", "blocks.2"),
                                                         ("cnn:tf_efficientnet_lite0", "cnn", "pre_logits")])]
        write_features_sample(folder, "caltech101_mini", ["a", "b", "c"], labels, feats)
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    cpu = make_run(base / "cpu", "run-cpu", skipped=("amazon/mug/bad.jpg",), sample=True)
    gpu = make_run(base / "gpu", "run-gpu", device="cuda:0", gpus=("NVIDIA H100",))
    other = make_run(base / "other", "run-other", tasks={
        "scene15_mini": ("scene", "per-class:train=5,test=10", "s15ccccc", 2, ["none"], 3),
        "caltech101_mini": ("object", "per-class:train=15,test=10", "c101DIFF", 1, ["none"], 4)},
        extractors=EXTRACTORS[:1])
    return {"cpu": cpu, "gpu": gpu, "other": other}


@pytest.fixture(scope="module")
def single(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    return build_report([runs["cpu"]], out)


@pytest.fixture(scope="module")
def merged(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("merged")
    return build_report([runs["cpu"], runs["gpu"], runs["other"]], out)


SECTION_IDS = ["summary", "how-to-read", "families", "per-task", "anchors", "layers", "speed", "domain", "embedding",
               "confusion", "comparability", "skipped", "runs"]


def test_files_written(single):
    out = single.parent
    for name in ("report.html", "report.md", "accuracy.csv", "accuracy.tex", "results-merged.csv",
                 "domain_matrices.csv"):
        assert (out / name).is_file(), name
    assert (out / "figures" / "accuracy-heatmap.png").is_file()


def test_html_self_contained(single):
    html = single.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I), "external URL in src/href"
    assert not re.search(r"<link\b", html, re.I), "a <link> element (external stylesheet?)"
    assert not re.search(r"<script\b[^>]*\bsrc\s*=", html, re.I)
    assert "@import" not in html and "url(http" not in html
    imgs = re.findall(r"<img [^>]*src='([^']*)'", html)
    assert len(imgs) >= 6 and all(s.startswith("data:image/png;base64,") for s in imgs)
    assert "name=\"viewport\"" in html and "overflow-x: auto" in html  # phone: responsive, tables scroll


def test_sections_present(single):
    html = single.read_text()
    md = (single.parent / "report.md").read_text()
    for sid in SECTION_IDS:
        assert f'<section id="{sid}">' in html, sid
        assert f'<a id="{sid}"></a>' in md, sid
    assert "failed to build" not in html
    for fig in ("layers-0", "speed-accuracy", "domain-0", "embedding", "confusion"):
        assert (single.parent / "figures" / f"{fig}.png").is_file(), fig
        assert f"figures/{fig}.png" in md
    assert "amazon/mug/bad.jpg" in html  # skipped images listed
    assert "0123456789abcdef" in html and "Test CPU" in html  # provenance
    assert "source package" in html  # weights provenance


def test_bold_best(single):
    acc = pd.read_csv(single.parent / "accuracy.csv")
    best = acc[acc["primary"] & (acc["task"] == "caltech101_mini")].sort_values("acc_mean").iloc[-1]
    assert best["label"] == "cnn:tf_efficientnet_lite0@pre_logits" and bool(best["is_best"])
    assert acc[acc["primary"]].groupby("task")["is_best"].sum().ge(1).all()
    md = (single.parent / "report.md").read_text().split('<a id="per-task"></a>')[1].split("<a id=")[0]
    row = next(l for l in md.splitlines() if l.startswith("| cnn:tf_efficientnet_lite0@pre_logits |"))
    assert row.count("**") == 2 * 3  # best on the object, fine-grained and scene tasks
    coral = next(l for l in md.splitlines() if l.startswith("| cnn:tf_efficientnet_lite0@pre_logits +coral |"))
    assert coral.count("**") == 2 * 2  # and, with CORAL, on the two domain shifts
    hog = next(l for l in md.splitlines() if l.startswith("| hog |"))
    assert "**" not in hog
    html = single.read_text()
    assert re.search(r"<td[^>]*><strong>\d+\.\d ± \d+\.\d</strong></td>", html)


def test_mean_class_metric_for_caltech_and_scene(single):
    acc = pd.read_csv(single.parent / "accuracy.csv")
    metric = acc.groupby("task")["metric"].first()
    assert metric["caltech101_mini"] == "mean_class_acc" and metric["scene15_mini"] == "mean_class_acc"
    assert metric["cub200_mini"] == "top1" and metric["office_caltech10:amazon->webcam"] == "top1"


def test_latex(single):
    tex = (single.parent / "accuracy.tex").read_text()
    assert "\\toprule" in tex and "\\bottomrule" in tex and "\\textbf{" in tex
    assert "caltech101\\_mini$^\\dagger$" in tex
    assert "$\\rightarrow$" in tex  # domain task names
    assert tex.count("\\\\") >= len(EXTRACTORS) + 2


def test_layers_in_network_order(single):
    md = (single.parent / "report.md").read_text()
    sec = md.split('<a id="layers"></a>')[1].split("<a id=")[0]
    assert "| task | blocks.2 | blocks.4 | pre_logits |" in sec


def test_anchors_beside_matching_rows(single):
    md = (single.parent / "report.md").read_text()
    per_task = md.split('<a id="per-task"></a>')[1].split("<a id=")[0]
    header = next(l for l in per_task.splitlines() if l.startswith("| extractor |"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    anchor = next(l for l in per_task.splitlines() if "published: DeCAF6 + SVM" in l)
    cells = [c.strip() for c in anchor.strip("|").split("|")]
    assert cells[cols.index("caltech101_mini† (object)")] == "*86.9*"
    anchors = md.split('<a id="anchors"></a>')[1].split("<a id=")[0]
    line = next(l for l in anchors.splitlines() if l.startswith("| caltech101_mini |"))
    assert "cnn:tf_efficientnet_lite0@pre_logits" in line and "86.9" in line and "Donahue" in line
    surf = next(l for l in anchors.splitlines() if "office_caltech10:amazon->webcam" in l and "11.1" in l)
    assert "| surf-bow |" in surf  # the SURF anchor sits next to the SURF row
    assert "Lazebnik" in anchors and "Razavian" in anchors  # full references listed


def test_merge_two_runs(merged):
    acc = pd.read_csv(merged.parent / "accuracy.csv")
    row = acc[(acc["task"] == "cub200_mini") & (acc["label"] == "hog")].iloc[0]
    assert row["n_runs"] == 2 and row["devices"] == "cpu+cuda:0"
    expected = np.mean([_acc("hog", "", "cub200_mini", 0, "none", d) for d in ("cpu", "cuda:0")])
    assert row["acc_mean"] == pytest.approx(expected)
    html = merged.read_text()
    assert "3 run(s)" in html
    md = (merged.parent / "report.md").read_text()
    speed = md.split('<a id="speed"></a>')[1].split("<a id=")[0]
    assert "| CPU |" in speed and "| GPU |" in speed and "NVIDIA H100" in speed


def test_comparability_split(merged):
    acc = pd.read_csv(merged.parent / "accuracy.csv", keep_default_na=False)
    scene = acc[acc["task"] == "scene15_mini"]
    assert set(scene[~scene["primary"]]["protocol"]) == {"per-class:train=5,test=10"}
    assert scene[scene["primary"]]["is_best"].sum() >= 1 and scene[~scene["primary"]]["is_best"].sum() == 1
    md = (merged.parent / "report.md").read_text()
    sec = md.split('<a id="comparability"></a>')[1].split("<a id=")[0]
    assert "protocol 'per-class:train=5,test=10' differs from 'per-class:train=10,test=10'" in sec
    assert "dataset_id c101DIFF differs from c101aaaa" in sec
    assert "ranked on its own" in sec


def test_layer_list_in_spec_does_not_split_a_variant(tmp_path):
    """cnn:m@depth and cnn:m (pre_logits) give the same pre_logits features: one row, two runs."""
    task = {"cub200_mini": TASKS["cub200_mini"]}
    a = make_run(tmp_path / "a", "a", tasks=task, extractors=[("cnn:m@depth", "cnn", ["blocks.2", "pre_logits"], 0.6, 9)])
    b = make_run(tmp_path / "b", "b", tasks=task, extractors=[("cnn:m", "cnn", ["pre_logits"], 0.6, 9)])
    build_report([a, b], tmp_path / "out")
    acc = pd.read_csv(tmp_path / "out" / "accuracy.csv")
    assert sorted(acc["label"]) == ["cnn:m@blocks.2", "cnn:m@pre_logits"]
    assert acc.set_index("label").loc["cnn:m@pre_logits", "n_runs"] == 2
    merged = pd.read_csv(tmp_path / "out" / "results-merged.csv")
    assert set(merged["extractor"]) == {"cnn:m@depth", "cnn:m"}  # the specs as written


def test_embedding_absent_says_why(runs, tmp_path):
    build_report([runs["other"]], tmp_path)
    md = (tmp_path / "report.md").read_text()
    sec = md.split('<a id="embedding"></a>')[1].split("<a id=")[0]
    assert "No 2-D embedding" in sec and "features-sample" in sec
    assert "cache" not in sec  # a report draws only what the run wrote; it never reads the feature cache


def test_features_sample_roundtrip(tmp_path):
    labels = np.array([0, 1, 2] * 400)
    X = np.arange(1200 * 4, dtype=np.float32).reshape(1200, 4)
    write_features_sample(tmp_path, "t", ["a", "b", "c"], labels, [("hog", "", "classical", X)], max_points=100)
    s = read_features_sample(tmp_path)
    assert len(s["labels"]) == 100 and s["features"][0][3].shape == (100, 4)
    rows = s["features"][0][3][:, 0].astype(int) // 4  # row ids kept aligned with their labels
    assert np.array_equal(labels[rows], s["labels"])
    wide = np.random.default_rng(0).random((90, 5000)).astype(np.float32)  # a Fisher vector is stored reduced
    write_features_sample(tmp_path / "w", "t", ["a", "b", "c"], labels[:90], [("fv", "", "classical", wide)])
    meta = json.loads((tmp_path / "w" / "features-sample" / "sample.json").read_text())
    assert meta["features"][0]["preprocessed"] == "l2-pca64" and meta["features"][0]["dim"] == 5000
    assert read_features_sample(tmp_path / "w")["features"][0][3].shape == (90, 64)


def test_partial_and_empty_runs(tmp_path):
    run = make_run(tmp_path / "r", "r1", status="running", tasks={"cub200_mini": TASKS["cub200_mini"]},
                   extractors=EXTRACTORS[:1])
    html = build_report([run], tmp_path / "out").read_text()
    assert "did not complete" in html and "failed to build" not in html
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "results.jsonl").write_text("")
    html = build_report([empty], tmp_path / "out2").read_text()
    assert "No result records" in html and "failed to build" not in html


# -- results corpus ----------------------------------------------------------------------------------------

def test_corpus_publish_render_check(runs, tmp_path):
    corpus, md = tmp_path / "results", tmp_path / "RESULTS.md"
    msg = corpus_mod.cli_add([runs["cpu"], runs["other"]], corpus, md)
    assert "record(s) added" in msg
    n = sum(1 for _ in open(corpus / "quick-shared.jsonl"))
    corpus_mod.publish([runs["cpu"]], corpus)  # publishing again adds nothing
    assert sum(1 for _ in open(corpus / "quick-shared.jsonl")) == n
    assert len(corpus_mod.read_jsonl(corpus / "runs.jsonl")) == 2
    assert corpus_mod.check_results_md(corpus, md) == []
    assert corpus_mod.render_results_md(corpus) == md.read_text()  # deterministic
    text = md.read_text()
    assert "caltech101_mini" in text and "*published: DeCAF6 + SVM" in text and "Kept apart" in text
    md.write_text(text.replace("86.9", "99.9"))
    code, out = corpus_mod.cli_render(corpus, md, check=True)
    assert code == 1 and "out of date" in out
    assert corpus_mod.cli_render(corpus, md)[0] == 0 and corpus_mod.check_results_md(corpus, md) == []


def test_corpus_refuses_bad_records(runs, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    rec = json.loads((runs["cpu"] / "results.jsonl").read_text().splitlines()[0])
    del rec["dataset_id"]
    (bad / "results.jsonl").write_text(json.dumps(rec) + "\n")
    (bad / "run.json").write_text((runs["cpu"] / "run.json").read_text())
    with pytest.raises(Exception, match="dataset_id"):
        corpus_mod.publish([bad], tmp_path / "results")
    partial = make_run(tmp_path / "p", "p1", status="running", tasks={"cub200_mini": TASKS["cub200_mini"]},
                       extractors=EXTRACTORS[:1])
    with pytest.raises(Exception, match="not 'complete'"):
        corpus_mod.publish([partial], tmp_path / "results")


def test_result_columns_are_additive():
    """One record type for runner, corpus and reports: schema v1's columns first, in order, new ones after."""
    import dataclasses

    from featbench.records import RESULT_COLUMNS, ResultRecord

    frozen_v1 = [
        "schema_version", "featbench_version", "run_id", "suite", "task", "family", "dataset", "dataset_id",
        "protocol", "method", "trial", "seed", "extractor", "extractor_family", "layer", "extractor_config",
        "weights", "classifier", "C", "cv_score", "top1", "mean_class_acc", "n_train", "n_test", "dim",
        "extract_s", "img_per_s", "fit_s", "device"]
    assert SCHEMA_V1_COLUMNS == frozen_v1 and RESULT_COLUMNS[:len(frozen_v1)] == frozen_v1
    assert RESULT_COLUMNS[len(frozen_v1):len(frozen_v1) + 1] == ["img_per_s_source"]  # the order once published
    assert all(f.default is not dataclasses.MISSING for f in dataclasses.fields(ResultRecord)[len(frozen_v1):])


def test_committed_corpus_has_schema_v1_columns():
    files = [p for p in (REPO / "results").glob("*.jsonl") if p.name != corpus_mod.RUNS_FILE]
    if not files:
        pytest.skip("no committed corpus yet")
    for path in files:
        for i, rec in enumerate(corpus_mod.read_jsonl(path)):
            missing = [c for c in SCHEMA_V1_COLUMNS if c not in rec]
            assert not missing, f"{path.name}:{i + 1} lacks {missing}"
    runs = {r["run_id"] for r in corpus_mod.read_jsonl(REPO / "results" / corpus_mod.RUNS_FILE)}
    for path in files:
        assert {r["run_id"] for r in corpus_mod.read_jsonl(path)} <= runs, f"{path.name}: record without its run"


def test_results_md_matches_corpus():
    if not (REPO / "results").is_dir():
        pytest.skip("no committed corpus yet")
    diff = corpus_mod.check_results_md(REPO / "results", REPO / "RESULTS.md")
    assert not diff, "RESULTS.md is out of date; run `featbench results render`:\n" + "\n".join(diff[:40])


def test_report_from_committed_corpus_records(tmp_path):
    """Real records (from a real run, via the corpus) make a report without errors."""
    files = [p for p in (REPO / "results").glob("*.jsonl") if p.name != corpus_mod.RUNS_FILE]
    if not files:
        pytest.skip("no committed corpus yet")
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.jsonl").write_text(files[0].read_text())
    html = build_report([run], tmp_path / "out").read_text()
    assert "failed to build" not in html and "data:image/png;base64," in html


# -- looking at it ---------------------------------------------------------------------------------------------

@pytest.mark.skipif(find_chromium() is None, reason="chromium not on PATH (Debian package 'chromium'); "
                                                    "the screenshot check needs a headless browser")
def test_chromium_screenshot(single, tmp_path):
    png = screenshot(single, tmp_path / "report.png", width=1280, height=2400)
    from PIL import Image

    im = Image.open(png).convert("L")
    assert im.size == (1280, 2400)
    arr = np.asarray(im)
    assert arr.std() > 10  # not a blank page: text, tables and figures rendered
    phone = screenshot(single, tmp_path / "phone.png", width=390, height=1600)
    assert Image.open(phone).size == (390, 1600)


def test_corpus_rendering_shows_a_later_run_instead_of_averaging_repeats():
    base = {"task": "t", "protocol": "p", "dataset_id": "d", "extractor": "hog", "extractor_config": "c",
            "weights": "", "layer": "", "method": "none", "classifier": "logreg"}
    df = pd.DataFrame([
        {**base, "trial": 0, "top1": 0.50, "_run": 0, "_order": 0},  # superseded by run 1
        {**base, "trial": 1, "top1": 0.55, "_run": 0, "_order": 1},  # only run 0 has trial 1
        {**base, "trial": 0, "top1": 0.60, "_run": 1, "_order": 2},
        {**base, "extractor_config": "other", "trial": 0, "top1": 0.40, "_run": 0, "_order": 3},
    ])
    kept, superseded = corpus_mod.latest_records(df)
    assert superseded == 1
    assert sorted(kept["top1"]) == [0.40, 0.55, 0.60]


def test_domain_matrices_keep_protocols_apart_and_drop_task_labels(tmp_path):
    from featbench.reports.sections import domain_matrices
    from featbench.reports.tables import parse_domain_task

    assert parse_domain_task("office_caltech10:amazon->webcam#st") == ("office_caltech10", "amazon", "webcam")
    assert parse_domain_task("office_caltech10:amazon->webcam") == ("office_caltech10", "amazon", "webcam")
    tasks = {"office_caltech10:amazon->webcam": ("domain", "source-only-full", "officeee", 1, ["none"], 4),
             "office_caltech10:amazon->webcam#st": ("domain", "source+target", "officeee", 2, ["none", "coral"], 4)}
    run = make_run(tmp_path / "run", "r1", tasks=tasks)
    from featbench.reports.data import load_runs
    from featbench.reports.tables import aggregate

    mats = domain_matrices(aggregate(load_runs([run]).df))
    assert set(mats) == {"office_caltech10 — source-only-full", "office_caltech10 — source+target"}
    for sources, targets, _, _ in mats.values():
        assert (sources, targets) == (["amazon"], ["webcam"])


def test_learning_curve_points_meet_an_anchor_only_at_its_training_size():
    from featbench.reports.anchors import ANCHORS, applicable

    tasks = {f"caltech101#n={n}": "caltech101" for n in (1, 5, 30)} | {"caltech101": "caltech101",
                                                                       "office_caltech10:amazon->webcam#n=5": "office-caltech10"}
    matched = [(a.reference, t) for a, t in applicable(tasks, ANCHORS)]
    assert ("donahue2014", "caltech101#n=30") in matched and ("donahue2014", "caltech101") in matched
    assert not [t for _, t in matched if t.endswith(("#n=1", "#n=5"))]
