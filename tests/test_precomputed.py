"""The precomputed extractor, feature-file datasets and the 1nn classifier, end to end."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io
from typer.testing import CliRunner

from featbench.classifier import fit_evaluate
from featbench.cli import app
from featbench.datasets.feature_files import preprocess, read_feature_file
from featbench.datasets.readers import detect_layout, read_any
from featbench.errors import FeatbenchError
from featbench.features import create

from helpers import make_texture_folder


def _expected(ds, dim=5, seed=0):
    """A distinct random feature vector per record (float32, exactly representable in every format)."""
    rng = np.random.default_rng(seed)
    return {r.relpath: rng.integers(0, 1000, dim).astype(np.float32) for r in ds.records}


def _write(path: Path, fmt: str, rows: list, feats: np.ndarray, labels=None, with_paths=True):
    paths = np.array(rows, dtype=object)
    if fmt == "mat":
        data = {"fts": feats}
        if with_paths:
            data["imgNames"] = paths
        if labels is not None:
            data["labels"] = np.asarray(labels, dtype=np.uint8)[:, None]
        scipy.io.savemat(path, data)
    elif fmt == "npz":
        extra = {"paths": np.array(rows)} if with_paths else {}
        np.savez(path, features=feats, **extra, **({"labels": np.asarray(labels)} if labels is not None else {}))
    elif fmt == "parquet-index":  # paths as the index, one numeric column per dimension
        df = pd.DataFrame(feats, index=pd.Index(rows), columns=[f"f{i}" for i in range(feats.shape[1])])
        df.to_parquet(path.with_suffix(".parquet"))
    elif fmt == "parquet":
        df = pd.DataFrame({"path": rows, "features": list(feats)})
        if labels is not None:
            df["label"] = labels
        df.to_parquet(path)
    elif fmt == "npy":
        np.save(path, feats)
        if with_paths:
            path.with_suffix(".index.txt").write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture()
def textures(tmp_path):
    return read_any(make_texture_folder(tmp_path / "tex", per_class=3, size=16), name="tex")


@pytest.mark.parametrize("fmt", ["mat", "npz", "parquet", "parquet-index", "npy"])
def test_round_trip_by_path_in_any_row_order(tmp_path, textures, fmt):
    want = _expected(textures)
    suffix = fmt.split("-")[0]
    for group in textures.groups:
        recs = textures.in_group(group)[::-1]  # file order differs from the dataset's
        rows = [f"somewhere/tex/{r.relpath}" for r in recs]  # longer paths than the relpaths: suffix match
        _write(tmp_path / f"{group}.{suffix}", fmt, rows, np.stack([want[r.relpath] for r in recs]))
    ex = create(f"precomputed:path={tmp_path}/{{group}}.{suffix}")
    ex.bind_dataset(textures)
    got = ex.transform(textures.records)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, np.stack([want[r.relpath] for r in textures.records]))
    assert len(ex.describe()["files"]) == 2 and all(len(f["sha256"]) == 64 for f in ex.describe()["files"])


def test_order_and_key_matching_and_label_checks(tmp_path, textures):
    want = _expected(textures)
    classes = textures.classes
    for group in textures.groups:
        recs = sorted(textures.in_group(group), key=lambda r: r.relpath)
        _write(tmp_path / f"{group}.mat", "mat", [], np.stack([want[r.relpath] for r in recs]),
               labels=[classes.index(r.label) + 1 for r in recs], with_paths=False)
        np.savez(tmp_path / f"{group}.npz", features=np.stack([want[r.relpath] for r in recs[::-1]]),
                 keys=np.array([r.uid for r in recs[::-1]]))
    for spec in (f"precomputed:path={tmp_path}/{{group}}.mat", f"precomputed:path={tmp_path}/{{group}}.npz,match=key"):
        ex = create(spec)
        ex.bind_dataset(textures)
        np.testing.assert_array_equal(ex.transform(textures.records),
                                      np.stack([want[r.relpath] for r in textures.records]))
    # labels that contradict the images: rows 0 and 3 swapped -> a class gets two label values
    recs = sorted(textures.in_group("train"), key=lambda r: r.relpath)
    labels = [classes.index(r.label) + 1 for r in recs]
    labels[0], labels[3] = labels[3], labels[0]
    _write(tmp_path / "train.mat", "mat", [], np.stack([want[r.relpath] for r in recs]), labels=labels, with_paths=False)
    ex = create(f"precomputed:path={tmp_path}/{{group}}.mat")
    with pytest.raises(FeatbenchError, match=r"train\.mat.*do not match"):
        ex.bind_dataset(textures)


def test_mismatches_name_the_file(tmp_path, textures):
    recs = textures.in_group("train")
    _write(tmp_path / "short.npz", "npz", [], np.zeros((len(recs) - 1, 3), np.float32), with_paths=False)
    ex = create(f"precomputed:path={tmp_path}/short.npz")
    with pytest.raises(FeatbenchError, match=r"short\.npz: \d+ feature rows but \d+ images"):
        ex.bind_dataset(textures)
    _write(tmp_path / "paths.npz", "npz", ["train/brick/nothere.png"] * 2, np.zeros((2, 3), np.float32))
    with pytest.raises(FeatbenchError, match=r"paths\.npz: no row for"):
        create(f"precomputed:path={tmp_path}/paths.npz,match=path").bind_dataset(textures)
    (tmp_path / "junk.mat").write_bytes(b"not a mat file at all")
    with pytest.raises(FeatbenchError, match=r"junk\.mat"):
        read_feature_file(tmp_path / "junk.mat")
    with pytest.raises(FeatbenchError, match="no feature matrix"):
        np.savez(tmp_path / "nofeat.npz", other=np.zeros(3))
        read_feature_file(tmp_path / "nofeat.npz")
    with pytest.raises(FeatbenchError, match="norm must be one of"):
        create("precomputed:norm=l3")


def test_preprocess_l1_then_zscore_per_domain():
    rng = np.random.default_rng(1)
    X = rng.integers(0, 20, (12, 6)).astype(np.float64)
    domains = ["a"] * 7 + ["b"] * 5
    Z = preprocess(X, "l1", "domain", domains)
    L1 = X / X.sum(axis=1, keepdims=True)
    for rows in (slice(0, 7), slice(7, 12)):
        expect = (L1[rows] - L1[rows].mean(0)) / L1[rows].std(0)
        np.testing.assert_allclose(Z[rows], expect, rtol=1e-5, atol=1e-6)


def test_one_nn_is_euclidean_nearest_neighbour():
    rng = np.random.default_rng(2)
    Xtr, Xte = rng.normal(size=(30, 4)), rng.normal(size=(20, 4))
    ytr = rng.integers(0, 3, 30)
    yte = rng.integers(0, 3, 20)
    ev = fit_evaluate(Xtr, ytr, Xte, yte, kind="1nn")
    nearest = ((Xte[:, None, :] - Xtr[None, :, :]) ** 2).sum(-1).argmin(1)
    np.testing.assert_array_equal(ev.y_pred, ytr[nearest])
    assert ev.classifier == "1nn" and np.isnan(ev.C) and ev.top1 == pytest.approx(np.mean(ytr[nearest] == yte))


def _feature_folder(root: Path) -> Path:
    """Two 'domains' of 3 classes: class means shared, the target shifted by a constant."""
    folder = root / "toy_feats"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(3)
    means = rng.normal(scale=4, size=(3, 8))
    for domain, shift, n in (("src", 0.0, 12), ("tgt", 2.0, 9)):
        labels = np.repeat([1, 2, 3], n // 3)
        X = means[labels - 1] + rng.normal(size=(len(labels), 8)) + shift
        scipy.io.savemat(folder / f"{domain}.mat", {"feas": X, "labels": labels[None, :]})
    (folder / "classes.txt").write_text("alpha\nbeta\ngamma\n")
    return folder


def test_feature_file_dataset_runs_through_protocols_methods_and_1nn(tmp_path):
    folder = _feature_folder(tmp_path / "data")
    assert detect_layout(folder) == "feature-files"
    ds = read_any(folder)
    assert ds.groups == ["src", "tgt"] and ds.classes == ["alpha", "beta", "gamma"] and ds.is_domain_dataset
    suite = tmp_path / "s.toml"
    suite.write_text('name = "toy"\nseed = 0\nextractors = ["precomputed:zscore=domain"]\nclassifiers = ["1nn", "logreg"]\n'
                     '[[tasks]]\nname = "toy_feats:src->tgt"\nprotocol = "source-only-sampled"\n'
                     'protocol_options = { per_class = 3 }\ntrials = 2\n'
                     'methods = ["none", "sa:d=2,zscore=false", "coral:zscore=false"]\n')
    result = CliRunner().invoke(app, ["run", str(suite), "--data-root", str(tmp_path / "data"), "--out",
                                      str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"), "--quiet"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(l) for l in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 3 * 2
    assert {r["classifier"] for r in rows} == {"1nn", "logreg"}
    assert {r["extractor"] for r in rows} == {"precomputed:zscore=domain"}
    assert all(r["n_train"] == 9 and r["n_test"] == 9 and r["dim"] in (8, 2) for r in rows)
    assert min(r["top1"] for r in rows if r["method"] == "none") > 0.5  # the classes are separable after z-scoring
    report = (tmp_path / "out" / "report.md").read_text()
    assert "classifier kind 'nearest-neighbour' is not ranked with 'linear' rows" in report


def test_reports_keep_1nn_apart_from_linear_rows():
    from featbench.reports.tables import aggregate, comparable_groups

    base = dict(task="t:a->b", protocol="p", dataset_id="d", extractor="e", extractor_config="c", weights="",
                layer="", method="none", family="domain", dataset="t", extractor_family="classical", dim=3,
                mean_class_acc=0.5, device="cpu", _run=0)
    df = pd.DataFrame([dict(base, classifier="logreg", top1=0.6, trial=0), dict(base, classifier="1nn", top1=0.9, trial=0),
                       dict(base, classifier="logreg", top1=0.62, trial=1), dict(base, classifier="1nn", top1=0.9, trial=1)])
    agg = aggregate(df)
    prim = agg[agg["primary"]]
    assert set(prim["classifier"]) == {"logreg"} and prim["is_best"].all()
    groups = comparable_groups(df)
    apart = groups[~groups["primary"]]
    assert list(apart["classifier_kind"]) == ["nearest-neighbour"] and "not ranked" in apart["why_apart"].iloc[0]
    # 1nn alone: its own group is the primary one
    agg1 = aggregate(df[df["classifier"] == "1nn"])
    assert agg1["primary"].all()


PUBLISHED_ROOT = Path("~/featbench-data/published").expanduser()


@pytest.mark.slow
def test_published_surf_table_reproduces_within_tolerance(tmp_path):
    """Two shifts of the published SURF table (LeoGautheron/OfficeCaltechDomainAdaptation's README) from the
    staged published files, with the published protocol: within the tolerance the report states."""
    from featbench.datasets.published import check_staged
    from featbench.reports.data import load_runs
    from featbench.reports.reproductions import TABLES, table_rows
    from featbench.reports.tables import aggregate

    problems = check_staged("office_caltech10_surf", PUBLISHED_ROOT)
    if problems:
        pytest.skip("published SURF features not staged (featbench published stage office_caltech10_surf "
                    f"--git-dir SNAPSHOT.git): {problems[0]}")
    result = CliRunner().invoke(app, ["run", str(Path(__file__).parents[1] / "suites" / "published-surf-da.toml"),
                                      "--tasks", "office_caltech10_surf:dslr->webcam,office_caltech10_surf:webcam->dslr#full",
                                      "--data-root", str(PUBLISHED_ROOT), "--out", str(tmp_path / "out"),
                                      "--cache-dir", str(tmp_path / "cache"), "--quiet", "--no-report"])
    assert result.exit_code == 0, result.output
    agg = aggregate(load_runs([tmp_path / "out"]).df)
    sampled = next(t for t in TABLES if t.key == "surf-sampled")
    full = next(t for t in TABLES if t.key == "surf-full")
    (dw,) = table_rows(sampled, agg)
    (wd,) = table_rows(full, agg)
    assert dw["shift"] == "D->W" and wd["shift"] == "W->D"
    assert all(c["ok"] for c in dw["cells"].values()), dw
    assert wd["cells"]["1NN"]["ok"], wd


def _records(values: dict[tuple[str, str, str], float]) -> pd.DataFrame:
    """Raw result records for (task, method, classifier) -> top-1."""
    base = dict(protocol="p", dataset_id="d", extractor="e", extractor_config="c", weights="", layer="", family="domain",
                dataset="office_caltech10_surf", extractor_family="classical", dim=3, mean_class_acc=0.5, device="cpu",
                _run=0, trial=0)
    return pd.DataFrame([dict(base, task=t, method=m, classifier=c, top1=v) for (t, m, c), v in values.items()])


def test_adaptation_effects_verdicts_are_paired_per_shift():
    from featbench.reports.adaptation_effects import effects
    from featbench.reports.tables import aggregate

    vals = {}
    for task, none, helps, hurts in (("x:a->b", 0.30, 0.40, 0.20), ("x:b->a", 0.50, 0.52, 0.45)):
        for clf in ("1nn", "logreg"):
            vals[(task, "none", clf)] = none
            vals[(task, "sa", clf)] = helps if clf == "1nn" else hurts
    eff = effects(aggregate(_records(vals))).set_index(["classifier", "method"])
    assert eff.loc[("1nn", "sa"), "verdict"] == "helps" and eff.loc[("1nn", "sa"), "delta"] == pytest.approx(6.0)
    assert eff.loc[("logreg", "sa"), "verdict"] == "hurts" and eff.loc[("logreg", "sa"), "delta_min"] == pytest.approx(-10)


def test_reproduction_rows_compare_each_cell_with_the_published_one():
    from featbench.reports.reproductions import TABLES, render_table, table_rows
    from featbench.reports.tables import aggregate

    table = next(t for t in TABLES if t.key == "surf-sampled")
    # A->W published NA 26.5, SA 31.2, CORAL 27.2: featbench within, outside and within 3 points
    vals = {("office_caltech10_surf:amazon->webcam", "none", "1nn"): 0.27,
            ("office_caltech10_surf:amazon->webcam", "sa:d=80,zscore=false", "1nn"): 0.36,
            ("office_caltech10_surf:amazon->webcam", "coral:zscore=false", "1nn"): 0.25,
            ("office_caltech10_surf:amazon->webcam", "none", "logreg"): 0.9}  # another classifier: not in the table
    rows = table_rows(table, aggregate(_records(vals)))
    assert [r["shift"] for r in rows] == ["A->W"]  # no mean row: 11 shifts missing
    cells = rows[0]["cells"]
    assert cells["NA"]["ok"] and not cells["SA"]["ok"] and cells["CORAL"]["ok"]
    assert cells["SA"]["diff"] == pytest.approx(36.0 - 31.2)
    _, body, verdict = render_table(table, rows)
    assert "2 of 3 reproduced cells" in verdict and body[0][6].endswith("✗")


def test_speed_does_not_time_precomputed_features():
    from featbench.speed import default_specs

    specs = default_specs()
    assert "precomputed" not in specs and "hog" in specs


def test_stage_extracts_checks_and_describes_published_files(tmp_path):
    import hashlib
    import subprocess

    from featbench.datasets.published import check_staged, stage

    repo = tmp_path / "src"
    (repo / "features").mkdir(parents=True)
    np.savez(repo / "features" / "a.npz", features=np.eye(3, dtype=np.float32), labels=np.array([1, 2, 2]))
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    digest = hashlib.sha256((repo / "features" / "a.npz").read_bytes()).hexdigest()
    manifest = tmp_path / "m.toml"
    entry = (f'[toy]\nrepo = "o/r"\ncommit = "{commit}"\nclasses = ["x", "y"]\n'
             f'files = [{{ path = "features/a.npz", name = "src.npz", sha256 = "SHA" }}]\n')
    manifest.write_text(entry.replace("SHA", digest))
    folder = stage("toy", repo / ".git", tmp_path / "out", manifest)
    assert (folder / "src.npz").read_bytes() == (repo / "features" / "a.npz").read_bytes()
    assert (folder / "classes.txt").read_text().split() == ["x", "y"] and commit[:12] in (folder / "SOURCE.md").read_text()
    assert check_staged("toy", tmp_path / "out", manifest) == []
    assert read_any(folder).classes == ["x", "y"]
    manifest.write_text(entry.replace("SHA", "0" * 64))
    with pytest.raises(FeatbenchError, match="sha256"):
        stage("toy", repo / ".git", tmp_path / "out2", manifest)
    assert check_staged("toy", tmp_path / "out", manifest)  # the staged copy no longer matches


def test_stage_images_copies_a_seeded_checked_subset(tmp_path):
    """kind = "images": per_class files of each domain/class folder at the commit, the same files for the
    same seed, a MANIFEST.tsv the folder reader takes, and its sha256 checked against the manifest."""
    import hashlib
    import subprocess

    from PIL import Image

    from featbench.datasets.published import check_staged, stage

    repo = tmp_path / "src"
    for domain in ("photo", "sketch"):
        for cls in ("dog", "house"):
            (repo / "PACS" / domain / cls).mkdir(parents=True)
            for i in range(5):
                Image.new("RGB", (8, 8), (i * 40, len(cls) * 20, 9)).save(repo / "PACS" / domain / cls / f"{i}.png")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    manifest = tmp_path / "m.toml"
    entry = (f'[toy]\nkind = "images"\nrepo = "o/r"\ncommit = "{commit}"\nroot = "PACS"\n'
             f'domains = ["photo", "sketch"]\nclasses = ["dog", "house"]\nper_class = 3\nseed = SEED\n')
    manifest.write_text(entry.replace("SEED", "0"))
    folder = stage("toy", repo / ".git", tmp_path / "out", manifest)
    ds = read_any(folder)
    assert sorted(ds.groups) == ["photo", "sketch"] and ds.classes == ["dog", "house"] and len(ds.records) == 12
    for rec in ds.records:
        assert Path(rec.path).read_bytes() == (repo / "PACS" / rec.relpath).read_bytes()
    digest = hashlib.sha256((folder / "MANIFEST.tsv").read_bytes()).hexdigest()
    manifest.write_text(entry.replace("SEED", "0") + f'manifest_sha256 = "{digest}"\n')
    assert stage("toy", repo / ".git", tmp_path / "again", manifest) and check_staged("toy", tmp_path / "again", manifest) == []
    assert (tmp_path / "again" / "toy" / "MANIFEST.tsv").read_text() == (folder / "MANIFEST.tsv").read_text()
    manifest.write_text(entry.replace("SEED", "1") + f'manifest_sha256 = "{digest}"\n')  # other files drawn
    with pytest.raises(FeatbenchError, match="MANIFEST.tsv has sha256"):
        stage("toy", repo / ".git", tmp_path / "other", manifest)
    manifest.write_text(entry.replace("SEED", "0").replace("per_class = 3", "per_class = 9"))
    with pytest.raises(FeatbenchError, match="fewer than per_class=9"):
        stage("toy", repo / ".git", tmp_path / "big", manifest)


def test_staged_pacs_subset_is_intact():
    """The staged PACS subset (suites/drawings-shift.toml) is exactly the manifest's selection."""
    from featbench.datasets.published import check_staged

    root = Path("~/featbench-data").expanduser()
    if not (root / "pacs_subset" / "MANIFEST.tsv").is_file():
        pytest.skip("PACS subset not staged (featbench published stage pacs_subset --git-dir "
                    "<MachineLearning2020/Homework3-PACS snapshot>.git --out ~/featbench-data)")
    assert check_staged("pacs_subset", root) == []
