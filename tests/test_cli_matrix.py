"""The command-line matrix: every subcommand, each option with a wrong value -> exit 2 and one line
naming the option or file, no traceback. The table in docs/hostile-inputs.md is generated here."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from featbench.cli import app

from doc_tables import check_doc_block
from helpers import make_texture_folder, write_suite
from hostile import is_root

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()

# (subcommand and arguments with placeholders, text the one line must contain, environment)
# placeholders: DATA (a data root with dataset 'ds'), FILE (a regular file), NOWHERE (a missing path),
# RUN (a finished run folder), EMPTY (an empty folder), LOCKED (a folder under a held lock)
CASES = [
    ("run --trials x", "'--trials'"),
    ("run --trials 0", "'--trials'"),
    ("run --seed 1.5", "'--seed'"),
    ("run --batch-size 0", "'--batch-size'"),
    ("run --workers -1", "'--workers'"),
    ("run --threads 0", "'--threads'"),
    ("run --no-such-option", "No such option: --no-such-option"),
    ("run --data-root NOWHERE", "--data-root: no such folder"),
    ("run --data-root FILE", "--data-root: no such folder"),
    ("run --data-root DATA --tasks ,", "--tasks: no task named"),
    ("run --data-root DATA --tasks nosuch", "dataset 'nosuch' not found"),
    ("run --data-root DATA --tasks ds:a->b", "no domain 'a'"),
    ("run --data-root DATA --tasks ds --extractors ,", "--extractors: no extractor named"),
    ("run --data-root DATA --tasks ds --extractors zzz", "unknown extractor 'zzz'"),
    ("run --data-root DATA --tasks ds --extractors hog:sise=3", "unknown option(s) sise"),
    ("run --data-root DATA --tasks ds --extractors hog:size=abc", "hog: size must be a positive integer"),
    ("run --data-root DATA --tasks ds --extractors hog:size=30", "multiple of cell=8"),
    ("run --data-root DATA --tasks ds --extractors sift-bow:k=0", "k=0: expected a positive integer"),
    ("run --data-root DATA --tasks ds --extractors cnn:no_such_model_x", "no_such_model_x"),
    ("run --data-root DATA --tasks ds --classifiers bogus", "unknown classifier 'bogus'"),
    ("run --data-root DATA --tasks ds --device banana", "--device: 'banana'"),
    ("run --data-root DATA --tasks ds --out FILE", "exists and is not a folder"),
    ("run --data-root DATA --tasks ds --out FILE/sub", "is not a folder"),
    ("run --data-root DATA --tasks ds --out LOCKED", "another featbench run"),
    ("run --data-root DATA --tasks ds --cache-dir FILE", "--cache-dir"),
    ("run --data-root DATA --tasks ds --executor banana", "banana"),
    ("run --data-root DATA --tasks ds --ray-workers 2", "ray"),
    ("run nosuch-suite", "suite not found: nosuch-suite"),
    ("run BADTOML", "malformed TOML"),
    ("run TYPOSUITE", "unknown key(s) trails"),
    ("run --data-root DATA --tasks ds --no-report ENV:FEATBENCH_MAX_PIXELS=lots", "FEATBENCH_MAX_PIXELS='lots'"),
    ("report", "Missing argument"),
    ("report NOWHERE --out EMPTY", "nowhere: no such run folder"),
    ("report EMPTY --out EMPTY", "results"),
    ("report RUN --out FILE", "exists and is not a folder"),
    ("report RUN", "Missing option '--out'"),
    ("list colours", "unknown 'colours'"),
    ("list tasks --data-root NOWHERE", "--data-root: no such folder"),
    ("cache info --cache-dir FILE", "--cache-dir"),
    ("cache clear --cache-dir FILE", "--cache-dir"),
    ("cache bogus", "No such command 'bogus'"),
    ("speed --device banana --extractors hog", "--device"),
    ("speed --batch-sizes a,b --extractors hog", "--batch-sizes"),
    ("speed --batch-sizes 0 --extractors hog", "--batch-sizes"),
    ("speed --images 0", "'--images'"),
    ("speed --repeats 0", "'--repeats'"),
    ("speed --warmup -1", "'--warmup'"),
    ("speed --threshold x", "'--threshold'"),
    ("speed --threshold 5 --extractors hog", "--threshold"),
    ("speed --extractors zzz", "unknown extractor 'zzz'"),
    ("speed --extractors hog --data-root NOWHERE", "--data-root: no such folder"),
    ("speed --extractors hog --results NOWHERE", "--results"),
    ("speed --extractors hog --dataset nosuch --data-root DATA", "nosuch"),
    ("speed --extractors hog --out FILE", "exists and is not a folder"),
    ("speed --extractors hog --fit-images 0", "'--fit-images'"),
    ("results add NOWHERE --corpus EMPTY", "nowhere"),
    ("results add EMPTY --corpus EMPTY", "featbench run folder"),
    ("results render --corpus NOWHERE --out EMPTY/R.md", "--corpus"),
    ("bogus", "No such command 'bogus'"),
]


@pytest.fixture(scope="module")
def places(tmp_path_factory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("matrix")
    make_texture_folder(base / "data" / "ds", per_class=2)
    (base / "file.txt").write_text("a regular file\n")
    (base / "empty").mkdir()
    (base / "bad.toml").write_text("name = [unclosed\n")
    write_suite(base / "typo.toml", ["ds"], ["hog"], trails=3)
    run_dir = base / "run"
    result = runner.invoke(app, ["run", "--data-root", str(base / "data"), "--tasks", "ds", "--extractors",
                                 "hog:size=32", "--out", str(run_dir), "--quiet", "--no-report",
                                 "--cache-dir", str(base / "cache")])
    assert result.exit_code == 0, result.output
    (base / "locked").mkdir()
    return {"DATA": str(base / "data"), "FILE": str(base / "file.txt"), "NOWHERE": str(base / "nowhere"),
            "RUN": str(run_dir), "EMPTY": str(base / "empty"), "LOCKED": str(base / "locked"),
            "BADTOML": str(base / "bad.toml"), "TYPOSUITE": str(base / "typo.toml"), "BASE": str(base)}


def invoke(case: str, places: dict[str, str], monkeypatch) -> tuple[int, str]:
    from filelock import FileLock

    words, env = [], {}
    for word in case.split():
        if word.startswith("ENV:"):
            key, _, value = word[4:].partition("=")
            env[key] = value
            continue
        for key, value in places.items():
            word = word.replace(key, value) if key in word and key != "BASE" else word
        words.append(word)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("FEATBENCH_CACHE", str(Path(places["BASE"]) / "cache"))
    monkeypatch.setenv("FEATBENCH_SPEED_HISTORY", str(Path(places["BASE"]) / "history.jsonl"))
    if words[0] in ("run", "speed") and "--out" not in words:  # never the working directory
        words += ["--out", str(Path(places["BASE"]) / f"{words[0]}-out")]
    lock = FileLock(str(Path(places["LOCKED"]) / ".featbench.lock"))
    with lock:  # stands for another run holding that folder
        result = runner.invoke(app, words)
    return result.exit_code, result.output


@pytest.mark.parametrize("case,expected", CASES, ids=[c for c, _ in CASES])
def test_a_wrong_value_gives_one_line_and_exit_2(case, expected, places, monkeypatch):
    code, output = invoke(case, places, monkeypatch)
    lines = [l for l in output.splitlines() if l.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in output, output
    assert lines[0].startswith("featbench: error: ") and expected in lines[0], lines[0]


@pytest.mark.skipif(is_root(), reason="root writes into any folder: an unwritable --out needs a non-root user")
def test_an_unwritable_out_folder_gives_one_line(places, monkeypatch, tmp_path):
    locked = tmp_path / "readonly"
    locked.mkdir()
    locked.chmod(0o500)
    code, output = invoke(f"run --data-root DATA --tasks ds --out {locked}/out", places, monkeypatch)
    assert code == 2 and "not writable" in output and len(output.strip().splitlines()) == 1


def test_the_bad_invocation_table_is_in_step(places, monkeypatch):
    rows = ["| command | what featbench prints (exit 2) |", "|---|---|"]
    for case, _ in CASES:
        code, output = invoke(case, places, monkeypatch)
        line = output.strip().replace(places["BASE"], "…").replace("|", "/")
        line = re.sub(r"(known:|; choose|one of:) [^)]*", r"\1 …", line)  # lists that grow with the registries
        rows.append(f"| `featbench {case.replace('|', '/')}` | {line} |")
    rows.append("| `featbench run --out DIR` where DIR is not writable (non-root) | featbench: error: --out DIR/out: "
                "DIR is not writable (permission denied) |")
    check_doc_block(REPO / "docs" / "hostile-inputs.md", "invocations", "\n".join(rows))


def test_a_genuine_bug_shows_its_traceback_and_asks_for_a_report(places, monkeypatch):
    import featbench.runner
    from featbench.cli import BUG_LINE

    def broken(self, *args, **kwargs):  # a bug inside featbench, not bad input
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(featbench.runner.Runner, "resolve", broken)
    code, output = invoke("run --data-root DATA --tasks ds", places, monkeypatch)
    assert code == 1 and "Traceback" in output and "ZeroDivisionError" in output
    assert output.strip().splitlines()[-1] == BUG_LINE
