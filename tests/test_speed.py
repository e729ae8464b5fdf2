"""``featbench speed``: outputs and their columns, the history store, --compare's exit codes, the page.

Timings are never asserted (shared, noisy machines): only that numbers exist and are positive,
and that a planted baseline 2x faster (or 2x slower) than the current run flags (or does not
flag) a regression. Everything runs on a few of scikit-image's photos with hog (cheap), so the
module takes seconds.
"""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from typer.testing import CliRunner

from featbench import speed_history as sh
from featbench.errors import FeatbenchError
from featbench.speed import (SPEED_COLUMNS, STAGE_COLUMNS, speed_command, speed_images, split_specs,
                             stage_plan)

TINY = dict(images=3, repeats=1, warmup=0, batch_sizes="1,2", dataset="skimage", fit_images=3, quiet=True,
            page=False, echo=lambda m: None)


@pytest.fixture(scope="module")
def hog_run(tmp_path_factory):
    """One real measurement of hog, shared by the tests that only read its outputs."""
    out = tmp_path_factory.mktemp("speed")
    history = out / "history.jsonl"
    code = speed_command(extractors="hog", out=out, history=history, **dict(TINY, page=True))
    return out, history, code


def _rows(out):
    return pd.read_csv(out / "speed.csv")


def test_speed_writes_csv_and_json_with_columns(hog_run):
    out, _, code = hog_run
    assert code == 0
    df = _rows(out)
    assert list(df.columns) == list(SPEED_COLUMNS)
    for col in ("extractor", "device", "batch_size", "mode", "img_per_s", "latency_ms_p50", "latency_ms_iqr",
                "read_ms", "decode_ms", "preprocess_ms", "extract_ms", "encode_ms", "transfer_ms",
                "e2e_over_synthetic", "torch_threads", "cv2_threads", "omp_num_threads"):
        assert col in df.columns
    assert set(df["mode"]) == {"e2e", "runner", "stage"}
    assert set(df["batch_size"]) == {1, 2}
    assert (df["device"] == "cpu").all() and (df["extractor"] == "hog").all()
    assert (df["img_per_s"] > 0).all() and (df["latency_ms_p50"] > 0).all()
    assert df["error"].isna().all()

    doc = json.loads((out / "speed.json").read_text())
    meta = doc["meta"]
    for key in ("git_commit", "versions", "machine", "machine_fingerprint", "threads", "settings", "dataset"):
        assert key in meta
    assert {"torch_threads", "cv2_threads", "OMP_NUM_THREADS"} <= set(meta["threads"])
    assert meta["dataset"]["name"] == "skimage_photos" and len(meta["dataset"]["relpaths"]) == 3
    assert len(doc["rows"]) == len(df)


def test_stage_columns_are_filled_by_the_stage_pass(hog_run):
    out, _, _ = hog_run
    st = _rows(out).query("mode == 'stage'")
    assert len(st) == 2 and (st["stage_source"] == "hook").all()
    for col in ("read_ms", "decode_ms", "preprocess_ms", "extract_ms", "transfer_ms"):
        assert st[col].notna().all(), col
    assert (st["transfer_ms"] == 0).all()  # CPU: nothing crosses a bus
    assert st["encode_ms"].isna().all()  # hog has no encoding stage
    total = st[[c for c in STAGE_COLUMNS]].fillna(0).sum(axis=1)
    assert all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(total, st["stage_total_ms"]))
    # e2e and runner rows carry no stage breakdown (they are timed as a whole)
    assert _rows(out).query("mode != 'stage'")[list(STAGE_COLUMNS)].isna().all().all()


def test_every_run_appends_one_history_record(hog_run):
    out, history, _ = hog_run
    records = sh.load(history)
    assert len(records) == 1
    rec = records[0]
    assert rec["machine_fingerprint"] == sh.fingerprint()
    assert "hostname" not in sh.machine_identity()
    assert {r["mode"] for r in rec["rows"]} == {"e2e", "runner", "stage"}


@pytest.fixture()
def fixed_speed(monkeypatch, hog_run):
    """Measurements replaced by hog_run's rows, so that ratios against a planted baseline are
    exact (a timing assertion on a shared machine would be flaky); everything else is real."""
    import featbench.speed as speed

    out0, _, _ = hog_run
    rows = json.loads((out0 / "speed.json").read_text())["rows"]
    monkeypatch.setattr(speed, "measure_extractor", lambda spec, *a, **k: [dict(r) for r in rows])
    return rows


def _plant(history, rows, meta_from, factor, commit="feedbeef00"):
    """A fake baseline record: ``rows`` with img/s multiplied by ``factor``."""
    meta = json.loads((meta_from / "speed.json").read_text())["meta"]
    sh.append(history, sh.make_record([dict(r, img_per_s=r["img_per_s"] * factor) for r in rows],
                                      dict(meta, git_commit=commit)))


def test_compare_flags_a_planted_slowdown(tmp_path, hog_run, fixed_speed):
    history = tmp_path / "h.jsonl"
    _plant(history, fixed_speed, hog_run[0], 2.0)  # the baseline was twice as fast
    messages = []
    code = speed_command(extractors="hog", out=tmp_path / "o", history=history, compare="feedbeef",
                         **dict(TINY, echo=messages.append))
    assert code == 1
    cmp = json.loads((tmp_path / "o" / "speed.json").read_text())["comparison"]
    assert cmp["regressions"] == len(cmp["rows"]) == len(fixed_speed)
    assert all(r["ratio"] == pytest.approx(0.5) for r in cmp["rows"])
    assert any("REGRESSION" in m for m in messages)
    assert len(sh.load(history)) == 2  # the compared run was appended too


def test_compare_passes_against_a_slower_baseline(tmp_path, hog_run, fixed_speed):
    history = tmp_path / "h.jsonl"
    _plant(history, fixed_speed, hog_run[0], 0.5)
    code = speed_command(extractors="hog", out=tmp_path / "o", history=history, compare="last", **TINY)
    assert code == 0
    cmp = json.loads((tmp_path / "o" / "speed.json").read_text())["comparison"]
    assert cmp["regressions"] == 0 and all(r["ratio"] == pytest.approx(2.0) for r in cmp["rows"])


def test_compare_threshold_is_respected(tmp_path, hog_run, fixed_speed):
    history = tmp_path / "h.jsonl"
    _plant(history, fixed_speed, hog_run[0], 1.0 / 0.85)  # 15 % slower now
    assert speed_command(extractors="hog", out=tmp_path / "a", history=history, compare="last", **TINY) == 0
    assert speed_command(extractors="hog", out=tmp_path / "b", history=history, compare="feedbeef",
                         threshold=0.1, **TINY) == 1


def test_compare_against_a_speed_json_path(tmp_path, hog_run, fixed_speed):
    doc = json.loads((hog_run[0] / "speed.json").read_text())
    for r in doc["rows"]:
        r["img_per_s"] *= 2.0
    base = tmp_path / "base.json"
    base.write_text(json.dumps(doc))
    code = speed_command(extractors="hog", out=tmp_path / "o", history=tmp_path / "h.jsonl", compare=str(base), **TINY)
    assert code == 1


def test_compare_last_without_history_is_not_an_error(tmp_path, fixed_speed):
    messages = []
    code = speed_command(extractors="hog", out=tmp_path / "o", history=tmp_path / "h.jsonl", compare="last",
                         **dict(TINY, echo=messages.append))
    assert code == 0
    assert any("no earlier speed run from this machine" in m for m in messages)


def test_compare_uses_only_this_machine(hog_run):
    out0, _, _ = hog_run
    doc = json.loads((out0 / "speed.json").read_text())
    other = sh.make_record(doc["rows"], dict(doc["meta"], machine_fingerprint="0" * 16, git_commit="abc123"))
    base = sh.resolve_baseline("abc123", [other], sh.fingerprint())
    assert base.rows == [] and base.missing and "other machines" in base.message
    last = sh.resolve_baseline("last", [other], sh.fingerprint())
    assert last.rows == [] and not last.missing and "no earlier speed run from this machine" in last.message
    assert sh.resolve_baseline("nosuchcommit", [other], sh.fingerprint()).missing


def test_compare_logic_and_threshold():
    key = dict(extractor="hog", device="cpu", batch_size=32, mode="e2e", dataset="d")
    base = sh.Baseline("b", [dict(key, img_per_s=100.0), dict(key, mode="stage", img_per_s=100.0)])
    cmp = sh.compare([dict(key, img_per_s=85.0), dict(key, mode="stage", img_per_s=70.0),
                      dict(key, extractor="orb-bow", img_per_s=5.0)], base, threshold=0.2)
    ratios = {r["mode"]: r["ratio"] for r in cmp.rows}
    assert ratios == pytest.approx({"e2e": 0.85, "stage": 0.70})
    assert [r["mode"] for r in cmp.regressions] == ["stage"]
    assert cmp.unmatched_current == 1
    with pytest.raises(FeatbenchError):
        sh.compare([], base, threshold=20)


def test_history_skips_a_torn_line(tmp_path):
    path = tmp_path / "h.jsonl"
    sh.append(path, {"rows": [], "git_commit": "a"})
    with open(path, "a") as fh:
        fh.write('{"rows": [')  # a run killed mid-write
    sh.append(path, {"rows": [], "git_commit": "b"})
    assert [r["git_commit"] for r in sh.load(path)] == ["a", "b"]


def test_compare_unknown_commit_is_a_usage_error(tmp_path):
    with pytest.raises(FeatbenchError, match="not in the speed history"):
        speed_command(extractors="hog", out=tmp_path / "o", history=tmp_path / "h.jsonl", compare="0badc0de",
                      **TINY)


def test_split_specs_keeps_option_commas():
    assert split_specs("hog:size=64,cell=8,sift-dense-bow:k=50,levels=2,cnn:squeezenet1_0@fire9") == [
        "hog:size=64,cell=8", "sift-dense-bow:k=50,levels=2", "cnn:squeezenet1_0@fire9"]
    assert split_specs("hog; orb-bow") == ["hog", "orb-bow"]


def test_usage_errors(tmp_path):
    import torch

    with pytest.raises(FeatbenchError, match="batch-sizes"):
        speed_command(extractors="hog", batch_sizes="0", out=tmp_path, history=tmp_path / "h", **
                      {k: v for k, v in TINY.items() if k != "batch_sizes"})
    if not torch.cuda.is_available():
        with pytest.raises(FeatbenchError, match="CUDA is not available"):
            speed_command(extractors="hog", device="cuda", out=tmp_path, history=tmp_path / "h", **TINY)


def test_device_all_without_cuda_says_cuda_is_skipped(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    messages = []
    code = speed_command(extractors="hog", device="all", out=tmp_path, history=tmp_path / "h.jsonl",
                         **dict(TINY, batch_sizes="2", echo=messages.append))
    assert code == 0
    assert any("cuda skipped" in m for m in messages)
    assert set(_rows(tmp_path)["device"]) == {"cpu"}


def test_learned_extractor_is_fitted_outside_the_timing(tmp_path):
    """A cheap codebook extractor: fitted first, fit time reported, every mode measured."""
    code = speed_command(extractors="orb-bow:k=8", out=tmp_path, history=tmp_path / "h.jsonl",
                         **dict(TINY, batch_sizes="2"))
    assert code == 0
    df = _rows(tmp_path)
    assert df["error"].isna().all(), df["error"].tolist()
    assert (df["fit_s"] > 0).all() and (df["fit_images"] == 3).all()
    st = df.query("mode == 'stage'").iloc[0]
    assert st["stage_source"] == "hook" and st["encode_ms"] > 0 and st["extract_ms"] > 0


def test_a_broken_extractor_is_reported_not_fatal(tmp_path):
    code = speed_command(extractors="hog,no-such-extractor", out=tmp_path, history=tmp_path / "h.jsonl",
                         **dict(TINY, batch_sizes="2"))
    assert code == 0
    df = _rows(tmp_path)
    bad = df[df["extractor"] == "no-such-extractor"]
    assert len(bad) == 1 and "unknown extractor" in bad["error"].iloc[0]
    assert (df[df["extractor"] == "hog"]["img_per_s"] > 0).all()


def test_stage_plan_falls_back_to_the_whole_transform():
    from featbench.features.base import Extractor

    class Plain(Extractor):
        name = "plain-test"

        def transform_one(self, image):
            return image.mean(axis=(0, 1)).astype("float32")

    plan, source = stage_plan(Plain(), "cpu")
    assert source == "whole" and list(plan) == ["extract"]


def test_speed_images_spread_and_fit_set():
    name, timed, fit = speed_images(4, [], "skimage", n_fit=3)
    assert name == "skimage_photos" and len(timed) == 4 and len(fit) == 3
    assert not {r.uid for r in timed} & {r.uid for r in fit}
    assert all(r.path for r in timed)  # file-backed: reading and decoding are real


def test_speed_page_renders_html_with_embedded_images(tmp_path, hog_run):
    from featbench.reports.speed_page import speed_section, write_speed_page

    out, history, _ = hog_run
    assert (out / "speed.html").is_file() and (out / "speed.md").is_file()  # written by the command
    results = pd.DataFrame({"extractor": ["hog", "hog", "other"], "layer": ["", "", ""], "top1": [0.5, 0.6, 0.9]})
    sec = speed_section(out / "speed.json", history=sh.load(history), results=results)
    assert sec.html.startswith("<section") and sec.html.rstrip().endswith("</section>")
    assert set(sec.figures) == {"stages", "pareto", "history"}
    assert sec.html.count("src='data:image/png;base64,") == 3
    assert "http://" not in sec.html and "https://" not in sec.html
    assert "| extractor" in sec.markdown and "hog" in sec.markdown
    page = write_speed_page(out / "speed.json", tmp_path, history=sh.load(history))
    assert "data:image/png;base64," in page.read_text()


def test_cli_speed_command(tmp_path):
    from featbench.cli import app

    res = CliRunner().invoke(app, ["speed", "--extractors", "hog", "--images", "2", "--repeats", "1", "--warmup", "0",
                                   "--batch-sizes", "2", "--dataset", "skimage", "--out", str(tmp_path / "o"),
                                   "--history", str(tmp_path / "h.jsonl"), "--quiet", "--no-page"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "o" / "speed.csv").is_file() and not (tmp_path / "o" / "speed.html").exists()
    res = CliRunner().invoke(app, ["speed", "--extractors", "hog", "--compare", "nope123", "--dataset", "skimage",
                                   "--images", "2", "--repeats", "1", "--warmup", "0", "--batch-sizes", "2",
                                   "--out", str(tmp_path / "o2"), "--history", str(tmp_path / "h.jsonl"), "--quiet",
                                   "--no-page"])
    assert res.exit_code == 2 and "not in the speed history" in res.output


def test_speed_json_records_are_the_e2e_rows(hog_run):
    doc = json.loads((hog_run[0] / "speed.json").read_text())
    assert doc["records"] and all(r["mode"] == "e2e" and r["hardware"] for r in doc["records"])
    assert len(doc["records"]) == sum(r["mode"] == "e2e" for r in doc["rows"])


def test_report_shows_the_speed_page_once(tmp_path, hog_run):
    """One speed-detail section, from the run folder's speed.json (the history file is not read)."""
    from types import SimpleNamespace

    from featbench.reports import sections

    doc = json.loads((hog_run[0] / "speed.json").read_text())
    ctx = SimpleNamespace(runs=SimpleNamespace(runs=[SimpleNamespace(speed=doc, run_id="r1"),
                                                     SimpleNamespace(speed=None, run_id="r2")]), out=tmp_path)
    sec = sections.speed_detail(ctx)
    assert sec.id == "speed-detail" and "data:image/png;base64," in sec.html and "### r1" in sec.md
    assert [sid for sid in sections.SECTIONS.names() if sid.startswith("speed")] == ["speed", "speed-detail"]
    assert sections.speed_detail(SimpleNamespace(runs=SimpleNamespace(runs=[]), out=tmp_path)) is None
