"""A run folder tells the truth: status running / reporting / complete / failed (with the reason),
outputs written atomically (a failing write leaves no truncated file), an earlier run's outputs
cleared, and one run at a time per --out. Each test reproduces a defect of issue 15."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from featbench.cli import app

from helpers import make_texture_folder

runner = CliRunner()


def _args(tmp_path: Path, out: Path, *extra: str, extractor: str = "hog:size=32") -> list[str]:
    return ["run", "--data-root", str(tmp_path / "data"), "--tasks", "ds", "--extractors", extractor,
            "--out", str(out), "--quiet", "--cache-dir", str(tmp_path / "cache"), *extra]


def _meta(out: Path) -> dict:
    return json.loads((out / "run.json").read_text())


@pytest.fixture()
def data(tmp_path) -> Path:
    return make_texture_folder(tmp_path / "data" / "ds", per_class=3, bad=True)


def test_strict_failure_says_failed_with_the_reason(tmp_path, data):
    out = tmp_path / "out"
    result = runner.invoke(app, _args(tmp_path, out, "--strict"))
    assert result.exit_code == 2 and "bad image (--strict)" in result.output
    meta = _meta(out)
    assert meta["status"] == "failed" and "zz_truncated.jpg" in meta["status_reason"]


def test_an_interruption_during_the_report_is_not_complete(tmp_path, data, monkeypatch):
    import featbench.reports

    def interrupted(*args, **kwargs):  # what Ctrl-C while the report is being built raises
        raise KeyboardInterrupt

    monkeypatch.setattr(featbench.reports, "build_report", interrupted)
    out = tmp_path / "out"
    result = runner.invoke(app, _args(tmp_path, out))
    assert result.exit_code == 130 and "interrupted" in result.output
    meta = _meta(out)
    assert meta["status"] == "failed" and meta["status_reason"].startswith("interrupted")
    assert (out / "results.csv").is_file() and not (out / "report.html").exists()


def test_a_complete_run_says_complete_after_its_report(tmp_path, data):
    out = tmp_path / "out"
    assert runner.invoke(app, _args(tmp_path, out)).exit_code == 0
    meta = _meta(out)
    assert meta["status"] == "complete" and "status_reason" not in meta
    assert {"report.html", "results.csv", "figures"} <= set(meta["outputs"])
    assert "did not complete" not in (out / "report.md").read_text()


def test_an_earlier_runs_outputs_are_cleared_and_the_users_files_kept(tmp_path, data):
    out = tmp_path / "out"
    assert runner.invoke(app, _args(tmp_path, out)).exit_code == 0
    (out / "notes.txt").write_text("mine")
    (out / "extra-output.csv").write_text("stale")
    meta = _meta(out)
    meta["outputs"].append("extra-output.csv")  # an output a later featbench version writes
    (out / "run.json").write_text(json.dumps(meta))
    result = runner.invoke(app, _args(tmp_path, out, "--strict"))
    assert result.exit_code == 2
    left = {p.name for p in out.iterdir()}
    assert not left & {"results.csv", "results.parquet", "report.html", "report.md", "figures", "extra-output.csv",
                       "features-sample", "accuracy.csv"}, left
    assert (out / "notes.txt").read_text() == "mine" and _meta(out)["status"] == "failed"


def test_a_second_run_on_the_same_out_is_refused(tmp_path, data):
    from filelock import FileLock

    out = tmp_path / "out"
    out.mkdir()
    with FileLock(str(out / ".featbench.lock")):  # held as a running `featbench run` holds it
        result = runner.invoke(app, _args(tmp_path, out))
    assert result.exit_code == 2 and "another featbench run" in result.output
    assert not (out / "results.jsonl").exists()
    assert runner.invoke(app, _args(tmp_path, out)).exit_code == 0  # the lock is released with its holder


def _featbench(args: list[str], limit_kb: int | None = None, **kw) -> subprocess.Popen:
    code = "import sys; from featbench.cli import main; sys.argv[0] = 'featbench'; main()"
    cmd = [sys.executable, "-c", code, *args]
    if limit_kb:
        cmd = ["bash", "-c", f'ulimit -f {limit_kb} && exec "$@"', "featbench", *cmd]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


@pytest.mark.slow
@pytest.mark.parametrize("limit_kb", [20, 60])
def test_a_write_that_fails_stops_with_one_line_and_no_truncated_output(tmp_path, data, limit_kb):
    """``ulimit -f`` (blocks of 1 KiB in bash) makes writes past that size fail, as a full disk would."""
    out = tmp_path / "out"
    proc = _featbench(_args(tmp_path, out, "--no-cache"), limit_kb=limit_kb)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 2, stderr
    assert "Traceback" not in stderr and stderr.strip().count("\n") == 0, stderr
    assert stderr.startswith("featbench: error: cannot write") and "File too large" in stderr
    meta = _meta(out)
    assert meta["status"] == "failed" and "cannot write" in meta["status_reason"]
    if (out / "report.html").exists():
        assert (out / "report.html").read_text().rstrip().endswith("</html>")
    for npy in (out / "features-sample").glob("*.npy") if (out / "features-sample").is_dir() else []:
        np.load(npy, allow_pickle=False)  # whole, or absent
    if (out / "results.jsonl").exists():
        for line in (out / "results.jsonl").read_text().splitlines():
            json.loads(line)  # no half line
    assert not list(out.glob(".*.tmp")), "a temporary file was left behind"


@pytest.mark.slow
def test_sigterm_marks_the_run_failed(tmp_path):
    make_texture_folder(tmp_path / "data" / "ds", per_class=6, size=96)
    out = tmp_path / "out"
    proc = _featbench(_args(tmp_path, out, "--no-cache", "--batch-size", "1", extractor="hog"))
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            if _meta(out)["status"] == "running":
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    meta = _meta(out)
    if proc.returncode == 0:
        pytest.skip("the run finished before SIGTERM arrived (machine too fast for this timing)")
    assert proc.returncode == 143 and "terminated" in stderr and "Traceback" not in stderr, stderr
    assert meta["status"] == "failed" and meta["status_reason"] == "terminated by SIGTERM"


def test_outputs_get_the_usual_permissions(tmp_path):
    """Atomic writes go through mkstemp (mode 0600); the file moved into place is readable as usual."""
    import os

    from featbench.atomic import atomic_write_text

    mask = os.umask(0o022)
    os.umask(mask)
    target = tmp_path / "report.html"
    atomic_write_text(target, "<html></html>")
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask
