"""The command line: bad input gives one line naming the problem and exit code 2, no traceback."""
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from featbench.cli import app

from helpers import make_texture_folder, write_suite

runner = CliRunner()


def _fails_cleanly(args, expected):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = [l for l in result.output.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert expected in lines[0]
    return lines[0]


def test_missing_data_root(tmp_path):
    _fails_cleanly(["run", "--data-root", str(tmp_path / "nowhere")], "--data-root: no such folder")


def test_unknown_task_and_extractor(tmp_path):
    make_texture_folder(tmp_path / "textures", per_class=2)
    _fails_cleanly(["run", "--data-root", str(tmp_path), "--tasks", "nosuch"], "dataset 'nosuch' not found")
    _fails_cleanly(["run", "--data-root", str(tmp_path), "--tasks", "textures", "--extractors", "hog,siftt"],
                   "unknown extractor 'siftt'")
    _fails_cleanly(["run", "--data-root", str(tmp_path), "--tasks", "textures", "--extractors", "hog:sise=3"],
                   "unknown option(s) sise")
    _fails_cleanly(["run", "--data-root", str(tmp_path), "--tasks", "textures:a->b"], "no domain 'a'")


def test_malformed_and_unknown_suites(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [unclosed\n")
    _fails_cleanly(["run", str(bad)], "malformed TOML")
    typo = write_suite(tmp_path / "typo.toml", ["textures"], ["hog"], trails=3)
    _fails_cleanly(["run", str(typo)], "unknown key(s) trails")
    _fails_cleanly(["run", "no-such-suite"], "suite not found: no-such-suite")
    empty = tmp_path / "empty.toml"
    empty.write_text('name = "x"\nextractors = ["hog"]\n')
    _fails_cleanly(["run", str(empty)], "missing 'tasks'")


def test_list_commands():
    result = runner.invoke(app, ["list", "extractors"])
    assert result.exit_code == 0 and "hog" in result.output
    result = runner.invoke(app, ["list", "suites"])
    assert "default" in result.output and "quick-shared" in result.output
    _fails_cleanly(["list", "colours"], "unknown 'colours'")


def test_run_writes_results_and_report_listing_a_bad_image(tmp_path):
    make_texture_folder(tmp_path / "data" / "textures", per_class=4, bad=True)
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", "--data-root", str(tmp_path / "data"), "--tasks", "textures",
                                 "--extractors", "hog:size=32", "--out", str(out), "--quiet",
                                 "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    for name in ("results.csv", "results.parquet", "run.json", "report.md", "report.html"):
        assert (out / name).is_file(), name
    assert "zz_truncated.jpg" in (out / "report.md").read_text()
    assert "zz_truncated.jpg" in (out / "report.html").read_text()


def test_console_script_reports_errors_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "featbench.cli", "run", "--data-root", str(tmp_path / "x")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("featbench: error:") and "Traceback" not in proc.stderr


def test_no_cache_flag_leaves_the_cache_untouched(tmp_path):
    make_texture_folder(tmp_path / "textures", per_class=4)
    cache = tmp_path / "cache"
    args = ["run", "--data-root", str(tmp_path), "--tasks", "textures", "--extractors", "hog:size=32",
            "--out", str(tmp_path / "out"), "--cache-dir", str(cache), "--quiet", "--no-report"]
    result = runner.invoke(app, args + ["--no-cache"])
    assert result.exit_code == 0, result.output
    assert not cache.exists() or not any(cache.rglob("*.npy"))
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert any(cache.rglob("*.npy"))


def test_missing_weights_fail_before_any_work(tmp_path, monkeypatch):
    from featbench.features import cnn_weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(cnn_weights, "reachable", lambda url, timeout=3.0: False)
    make_texture_folder(tmp_path / "textures", per_class=2)
    out = tmp_path / "out"
    line = _fails_cleanly(["run", "--data-root", str(tmp_path), "--tasks", "textures", "--extractors",
                           "hog,cnn:resnet50", "--out", str(out), "--cache-dir", str(tmp_path / "cache")],
                          "no ImageNet weights for 'resnet50'")
    assert "weights=random" in line
    assert not (out / "results.jsonl").exists() and not (tmp_path / "cache").exists()
