"""The hostile-input campaign: every kind in ``hostile.KINDS`` ends as a decoded image or a recorded
skip, at listing, in the decoder and in every extractor family (HOG, local descriptors with each
encoding, the CNN); folders that cannot be used stop a run before any work with one line.

``docs/hostile-inputs.md`` holds the table of what featbench does with each kind; it is generated
here (``FEATBENCH_UPDATE_DOCS=1 pytest tests/test_hostile.py tests/test_cli_matrix.py`` rewrites
it) and a test fails when it drifts from what the code does.
"""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from featbench.cli import app
from featbench.datasets.folder import ImageRecord, read_image_folder
from featbench.datasets.images import ImageDecodeError, read_image
from featbench.features import create

from doc_tables import check_doc_block
from helpers import FAST_SPECS, make_texture_folder
from hostile import KINDS, build_corpus, is_root, photo

REPO = Path(__file__).resolve().parents[1]
KIND_BY_NAME = {k.name: k for k in KINDS}
FAMILY_SPECS = FAST_SPECS  # every encoding of the local descriptors, HOG and the CNN, at fast settings


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, list[Path]]:
    return build_corpus(tmp_path_factory.mktemp("hostile"))


def _no_hang(seconds: int = 20):
    """Fail (instead of hanging the suite) if a read blocks, as opening a FIFO would."""
    def alarm(signum, frame):
        raise TimeoutError(f"blocked for {seconds} s")
    signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)


def decode_outcome(path: Path) -> tuple[str, str]:
    _no_hang()
    try:
        img = read_image(path)
    except ImageDecodeError as exc:
        return "skipped", str(exc).replace(str(path.parent) + "/", "")
    finally:
        signal.alarm(0)
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and min(img.shape[:2]) >= 1
    return "decoded", f"{img.shape[1]} x {img.shape[0]} RGB"


def test_every_kind_decodes_or_is_a_recorded_skip(corpus):
    assert len(KINDS) >= 25
    for name, paths in corpus.items():
        outcome, detail = decode_outcome(paths[0])
        assert outcome in KIND_BY_NAME[name].decode, (name, detail)
        if outcome == "skipped":
            assert paths[0].name in detail  # the reason names the file


def test_a_file_that_vanishes_after_listing_is_a_recorded_skip(tmp_path):
    make_texture_folder(tmp_path / "ds", per_class=2)
    ds = read_image_folder(tmp_path / "ds", "ds")
    gone = ds.records[0]
    Path(gone.path).unlink()
    with pytest.raises(ImageDecodeError, match="No such file"):
        gone.load()
    ex = create("hog:size=32")
    done, errors = [], {}
    for idx, _, errs in ex.iter_batches(ds.records, 4):
        done += idx
        errors.update(errs)
    assert list(errors) == [0] and gone.relpath in errors[0] and sorted(done) == list(range(1, len(ds.records)))


def test_listing_keeps_images_and_records_what_it_drops(tmp_path, corpus):
    root = make_texture_folder(tmp_path / "ds", per_class=2)
    build_corpus(root / "train" / "brick")
    ds = read_image_folder(root, "ds")
    dropped = {d["relpath"].rsplit("/", 1)[-1]: d["reason"] for d in ds.dropped}
    kept = {r.relpath.rsplit("/", 1)[-1] for r in ds.records}
    for name in corpus:
        kind = KIND_BY_NAME[name]
        if kind.listing == "dropped":
            assert kind.filename in dropped, name
        else:
            assert kind.filename in kept, name
    assert dropped["loop-a.jpg"] == "symlink loop" and dropped["x.jpg"] == "a folder named like an image"
    assert dropped["fifo.jpg"] == "a FIFO, not an image file"


def _records(corpus, only_cnn: bool = False) -> list[ImageRecord]:
    return [ImageRecord(uid=f"hostile-{name}", label="a", group="test", relpath=paths[0].name, path=str(paths[0]))
            for name, paths in corpus.items() if not only_cnn or KIND_BY_NAME[name].cnn]


@pytest.mark.parametrize("family", sorted(FAMILY_SPECS))
def test_every_extractor_family_decodes_or_skips_every_kind(family, corpus):
    ex = create(FAMILY_SPECS[family])
    ex.configure_runtime(device="cpu", batch_size=8, num_workers=0, threads=2)
    if ex.learns:
        train = [photo(96, 96, seed=s) for s in range(4)]
        ex.fit(train, image_ids=[f"train{s}" for s in range(4)], seed=0)
    records = _records(corpus, only_cnn=family == "cnn")
    done, errors, dims = [], {}, set()
    for indices, outs, errs in ex.iter_batches(records, 8):
        done += indices
        errors.update(errs)
        for X in outs.values():
            assert X.dtype == np.float32 and X.shape[0] == len(indices) and np.isfinite(X).all(), family
            dims.add(X.shape[1])
    assert sorted(done + list(errors)) == list(range(len(records)))
    assert len(dims) <= 1
    for i, rec in enumerate(records):
        kind = KIND_BY_NAME[rec.uid.removeprefix("hostile-")]
        outcome = "skipped" if i in errors else "decoded"
        assert outcome in kind.decode, (family, kind.name, errors.get(i))
        if i in errors:
            assert rec.relpath in errors[i]


# -- whole runs ------------------------------------------------------------------------------------

runner = CliRunner()


def _run(data_root: Path, out: Path, *extra: str):
    return runner.invoke(app, ["run", "--data-root", str(data_root), "--tasks", "ds", "--extractors", "hog:size=32",
                               "--out", str(out), "--quiet", "--cache-dir", str(out.parent / "cache"), *extra])


def _one_line_exit_2(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [l for l in result.output.splitlines() if l.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def test_a_run_on_a_hostile_folder_records_every_skip_and_drop(tmp_path):
    root = make_texture_folder(tmp_path / "data" / "ds", per_class=3)
    built = build_corpus(root / "train" / "brick")
    out = tmp_path / "out"
    result = _run(tmp_path / "data", out)
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "complete"
    skipped = {s["relpath"].rsplit("/", 1)[-1] for s in meta["skipped_images"]}
    dropped = {d["relpath"].rsplit("/", 1)[-1] for d in meta["dropped_files"]}
    report = (out / "report.md").read_text()
    for name in built:
        kind = KIND_BY_NAME[name]
        if kind.listing == "dropped":
            assert kind.filename in dropped, name
        elif kind.decode == {"skipped"}:
            assert kind.filename in skipped, name
        if kind.filename in skipped | dropped:
            assert kind.filename in report, name


def test_a_file_name_that_is_not_utf8_stops_the_run_before_any_work(tmp_path):
    root = make_texture_folder(tmp_path / "data" / "ds", per_class=2)
    (root / "train" / "brick").joinpath(os.fsdecode(b"caf\xe9.jpg")).write_bytes(b"x")
    line = _one_line_exit_2(_run(tmp_path / "data", tmp_path / "out"))
    assert "not valid UTF-8" in line and "train/brick/caf\\xe9.jpg" in line
    assert not (tmp_path / "cache").exists()


def test_an_empty_class_folder_stops_the_run_before_any_work(tmp_path):
    root = make_texture_folder(tmp_path / "data" / "ds", per_class=2)
    (root / "test" / "sand").mkdir()
    line = _one_line_exit_2(_run(tmp_path / "data", tmp_path / "out"))
    assert "empty class folder" in line and "test/sand" in line
    assert not (tmp_path / "cache").exists()


def test_a_single_class_stops_the_run_before_any_work(tmp_path):
    root = tmp_path / "data" / "ds"
    for split in ("train", "test"):
        (root / split / "only").mkdir(parents=True)
        for i in range(3):
            from PIL import Image
            Image.fromarray(photo(seed=i)).save(root / split / "only" / f"{i}.png")
    line = _one_line_exit_2(_run(tmp_path / "data", tmp_path / "out"))
    assert "1 class(es)" in line and "at least two" in line
    assert not (tmp_path / "cache").exists() and not (tmp_path / "out").exists()


# -- the table ---------------------------------------------------------------------------------------

def _family_column(name: str, decoded: str) -> str:
    kind = KIND_BY_NAME[name]
    families = "HOG, local (all encodings)" + (", CNN" if kind.cnn else "")
    return f"{families}: {'features' if decoded == 'decoded' else 'recorded skip'}"


def test_the_hostile_input_table_is_in_step(corpus, tmp_path):
    root = make_texture_folder(tmp_path / "ds", per_class=1)
    build_corpus(root / "train" / "brick")
    ds = read_image_folder(root, "ds")
    dropped = {d["relpath"].rsplit("/", 1)[-1]: d["reason"] for d in ds.dropped}
    rows = ["| kind | listing | decoding | extractors |", "|---|---|---|---|"]
    for kind in KINDS:
        if kind.name not in corpus:
            rows.append(f"| {kind.what} | not testable as root (root reads any file); as another user: "
                        "dropped, 'cannot be read (Permission denied)' | recorded skip | — |")
            continue
        outcome, detail = decode_outcome(corpus[kind.name][0])
        listing = f"dropped: {dropped[kind.filename]}" if kind.filename in dropped else "kept"
        rows.append(f"| {kind.what} | {listing} | {outcome}: {detail.replace('|', '/')} | "
                    f"{_family_column(kind.name, outcome)} |")
    rows += [
        "| a file deleted between listing and reading | kept | skipped: cannot read file (No such file or directory) "
        "| all: recorded skip |",
        "| a file or folder name that is not UTF-8 | run stops before any work, exit 2: '... name(s) are not valid "
        "UTF-8: train/brick/caf\\xe9.jpg; rename them' | — | — |",
        "| an empty class folder | run stops before any work, exit 2: '... empty class folder(s) with no image "
        "file: test/sand' | — | — |",
        "| a dataset (or training split) with one class | run stops before any work, exit 2: 'task 'ds': the dataset "
        "has 1 class(es) (only); a classifier needs at least two' | — | — |",
    ]
    check_doc_block(REPO / "docs" / "hostile-inputs.md", "kinds", "\n".join(rows))


def test_orb_and_every_encoding_survive_degenerate_images():
    """Defect: orb-bow crashed in fit on a 1 x 1 or 4 x 900 image (cv2 'inv_scale_x > 0')."""
    from featbench.features.local import orb_bits, prepare_gray

    for shape in ((1, 1), (4, 900), (900, 4), (62, 62)):
        points, bits = orb_bits(prepare_gray(np.zeros(shape + (3,), np.uint8), 300), 1500)
        assert points.shape == (0, 2) and bits.shape == (0, 256)
    ex = create("orb-bow:k=8")
    tiny = [np.full((1, 1, 3), 7, np.uint8), photo(4, 900 // 3).repeat(3, axis=1), photo(96, 96)]
    ex.fit(tiny, image_ids=["a", "b", "c"], seed=0)  # the 96 x 96 photo gives the descriptors
    X = ex.transform(tiny)
    assert X.shape == (3, 8) and np.isfinite(X).all()


def test_training_images_too_small_for_a_codebook_is_one_clear_error():
    from featbench.errors import FeatbenchError

    ex = create("orb-bow:k=8")
    with pytest.raises(FeatbenchError, match="gave 0 local descriptors, fewer than k=8"):
        ex.fit([np.zeros((1, 1, 3), np.uint8), np.zeros((4, 900, 3), np.uint8)], image_ids=["a", "b"], seed=0)
