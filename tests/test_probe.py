"""The torch linear probe against scikit-learn run to convergence: same objective, same optimum,
same chosen C; chunked evaluation gives the same optimum; results records carry the solver."""
import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from featbench import probe
from featbench.classifier import fit_evaluate
from featbench.errors import FeatbenchError


def _blobs(n=240, d=30, k=4, sep=0.5, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d)) * sep
    y = np.arange(n) % k
    X = centers[y] + rng.normal(size=(n, d))
    return StandardScaler().fit_transform(X).astype(np.float32), y


def _objective(problem, W, b, C):
    return problem.objective(torch.as_tensor(W, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64), C)


@pytest.mark.parametrize("C", [1e-3, 1.0, 100.0])
def test_logreg_reaches_sklearns_optimum(C):
    X, y = _blobs()
    problem = probe.Problem(X, y, 4, loss="multinomial", dtype=torch.float64)
    sol = problem.solve(C, tol=1e-6, max_iter=5000)
    ref = LogisticRegression(C=C, tol=1e-10, max_iter=100000).fit(X.astype(np.float64), y)
    assert sol.converged and sol.grad_max <= max(1e-6, probe.SCALED_FLOOR * C * len(X))
    ours, theirs = sol.objective, _objective(problem, ref.coef_.T, ref.intercept_, C)
    assert abs(ours - theirs) <= 1e-7 * theirs
    np.testing.assert_allclose(sol.W.numpy(), ref.coef_.T, atol=1e-4 * max(1.0, C))


def test_separable_data_at_large_C_converges_in_few_newton_iterations():
    """The case L-BFGS failed on (Office amazon->webcam HOG at C=10: separable rows in their span,
    746 iterations, unconverged): more dimensions than rows, large C. Newton reaches the tolerance
    in tens of iterations, at an objective no higher than scikit-learn's converged one."""
    X, y = _blobs(n=120, d=400, k=5, sep=0.3, seed=8)
    problem = probe.Problem(X, y, 5)
    sol = problem.solve(100.0)
    assert sol.converged and sol.n_iter <= 30
    ref = LogisticRegression(C=100.0, tol=1e-8, max_iter=100000).fit(X.astype(np.float64), y)
    assert sol.objective <= _objective(problem, ref.coef_.T, ref.intercept_, 100.0) * (1 + 1e-6)


@pytest.mark.parametrize("C", [1e-3, 1.0, 10.0])
def test_svm_reaches_linearsvcs_optimum(C):
    """LinearSVC's primal (dual=False, squared hinge, its intercept penalised as a constant feature)."""
    X, y = _blobs(seed=1)
    problem = probe.Problem(X, y, 4, loss="squared_hinge", dtype=torch.float64)
    sol = problem.solve(C, tol=1e-6, max_iter=5000)
    ref = LinearSVC(C=C, dual=False, tol=1e-12, max_iter=100000).fit(X.astype(np.float64), y)
    assert sol.converged
    ours, theirs = sol.objective, _objective(problem, ref.coef_.T, ref.intercept_, C)
    assert ours <= theirs + 1e-8 * max(1.0, abs(theirs))
    assert abs(ours - theirs) <= 1e-6 * max(1.0, abs(theirs))
    np.testing.assert_allclose(sol.W.numpy(), ref.coef_.T, atol=1e-3)


def test_float32_default_reaches_tol_and_matches_float64():
    X, y = _blobs(seed=2)
    p32 = probe.Problem(X, y, 4)
    p64 = probe.Problem(X, y, 4, dtype=torch.float64)
    for C in (0.01, 10.0):
        a, b = p32.solve(C), p64.solve(C, tol=1e-6)
        assert a.converged and a.grad_max <= probe.DEFAULT_TOL
        assert abs(a.objective - b.objective) <= 1e-5 * b.objective


def test_warm_start_along_the_path_same_optimum_fewer_iterations():
    X, y = _blobs(n=400, d=60, seed=3)
    problem = probe.Problem(X, y, 4, dtype=torch.float64)
    cold = problem.solve(10.0, tol=1e-6)
    warm = problem.solve(10.0, start=problem.solve(1.0, tol=1e-6), tol=1e-6)
    assert warm.converged and cold.converged
    assert abs(warm.objective - cold.objective) <= 1e-9 * cold.objective
    assert warm.n_iter < cold.n_iter


@pytest.mark.parametrize("loss", probe.LOSSES)
def test_row_blocks_give_the_same_optimum(loss):
    """The memory-bounded path: loss and gradient summed over row blocks, the same full-batch fit."""
    X, y = _blobs(n=300, seed=4)
    whole = probe.Problem(X, y, 4, loss=loss, dtype=torch.float64).solve(1.0, tol=1e-6)
    blocks = probe.Problem(X, y, 4, loss=loss, dtype=torch.float64, block_rows=37).solve(1.0, tol=1e-6)
    assert abs(whole.objective - blocks.objective) <= 1e-10 * whole.objective
    np.testing.assert_allclose(whole.W.numpy(), blocks.W.numpy(), atol=1e-6)


@pytest.mark.parametrize("kind", ["logreg", "svm"])
def test_fit_evaluate_agrees_with_converged_sklearn_on_synthetic_data(kind):
    X, y = _blobs(n=300, d=40, sep=0.35, seed=5)
    Xt, yt = _blobs(n=300, d=40, sep=0.35, seed=6)
    ours = fit_evaluate(X, y, Xt, yt, kind=kind, seed=0, solver="torch")
    ref = fit_evaluate(X, y, Xt, yt, kind=kind, seed=0, solver="sklearn", tol=1e-8, max_iter=100000)
    assert (ours.solver, ours.tol, ours.converged) == ("torch", probe.DEFAULT_TOL, True) and ours.n_iter > 0
    assert ours.C == ref.C
    assert abs(ours.top1 - ref.top1) <= 0.005


@pytest.mark.parametrize("kind", ["logreg", "svm"])
def test_two_classes_fit_scikit_learns_binary_model(kind):
    """scikit-learn fits one weight vector for two classes; the torch path's two-class multinomial
    at C/2 (and one-vs-rest pair) is the same model: the same decision values at every C."""
    X, y = _blobs(n=160, d=12, k=2, sep=0.4, seed=7)
    ours = fit_evaluate(X, y, X, y, kind=kind, seed=0, solver="torch", tol=1e-6)
    ref = fit_evaluate(X, y, X, y, kind=kind, seed=0, solver="sklearn", tol=1e-10, max_iter=100000)
    assert ours.C == ref.C
    scores = ours.model.decision_function(X)  # [n, 2]; the binary model's margin is their difference
    margin = scores[:, 1] - scores[:, 0] if kind == "logreg" else scores[:, 1]  # one-vs-rest: s0 = -s1
    np.testing.assert_allclose(margin, ref.model.decision_function(X), atol=1e-4)


def test_fit_evaluate_agrees_with_converged_sklearn_on_real_hog(shared_datasets):
    """HOG (8100-d) on caltech101_mini: d > n, so both run in the training rows' span."""
    from featbench.datasets.tasks import resolve_task
    from featbench.features import create

    task = resolve_task("caltech101_mini", [str(shared_datasets)])
    split = task.split(0, 0)
    hog = create("hog")
    index = {c: i for i, c in enumerate(task.dataset.classes)}
    X, Xt = hog.transform(split.train), hog.transform(split.test)
    y, yt = (np.array([index[r.label] for r in recs]) for recs in (split.train, split.test))
    ours = fit_evaluate(X, y, Xt, yt, seed=0, solver="torch")
    ref = fit_evaluate(X, y, Xt, yt, seed=0, solver="sklearn", tol=1e-8, max_iter=100000)
    assert ours.converged and ours.C == ref.C
    assert abs(ours.top1 - ref.top1) <= 0.005


def test_default_solver_is_torch_and_sklearn_keeps_its_old_tolerance():
    """New records are fitted by the torch solver; --solver sklearn is lbfgs at tol 1e-4 as before."""
    X, y = _blobs(n=120, d=10, sep=0.5, seed=1)
    ev = fit_evaluate(X, y, X, y, seed=0)
    assert (ev.solver, ev.tol, ev.max_iter) == ("torch", probe.DEFAULT_TOL, probe.DEFAULT_MAX_ITER)
    old = fit_evaluate(X, y, X, y, seed=0, solver="sklearn")
    assert (old.solver, old.tol, old.max_iter) == ("sklearn", 1e-4, 1000)


def test_unknown_solver():
    X, y = _blobs()
    with pytest.raises(FeatbenchError, match="unknown solver 'newton'"):
        fit_evaluate(X, y, X, y, solver="newton")


def test_probe_bench_command_reports_each_size(tmp_path):
    from typer.testing import CliRunner

    from featbench.cli import app

    result = CliRunner().invoke(app, ["probe-bench", "--rows", "600,300", "--dim", "16", "--classes", "3"])
    assert result.exit_code == 0, result.output
    table = [ln for ln in result.output.splitlines() if ln.startswith("| 300 ") or ln.startswith("| 600 ")]
    assert [ln.split("|")[1].strip() for ln in table] == ["300", "600"]  # increasing n
    assert all("| True |" in ln for ln in table)  # converged
    bad = CliRunner().invoke(app, ["probe-bench", "--rows", "2", "--classes", "3"])
    assert bad.exit_code == 2 and "--rows" in bad.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU path of gpu-check; on a GPU it measures for minutes")
def test_gpu_check_on_a_cpu_machine_says_so(tmp_path):
    from typer.testing import CliRunner

    from featbench.cli import app

    result = CliRunner().invoke(app, ["gpu-check", "--out", str(tmp_path)])
    assert result.exit_code == 0 and "No CUDA GPU on this machine" in result.output
    assert "nothing measured" in (tmp_path / "gpu-check.md").read_text()


def test_runner_records_the_solver(tmp_path):
    import pandas as pd

    from featbench.runner import RunOptions, Runner
    from featbench.suite import Suite, TaskSpec

    from helpers import make_texture_folder

    make_texture_folder(tmp_path / "textures")
    suite = Suite(name="t", tasks=[TaskSpec(name="textures")], extractors=["hog:size=32"], classifiers=["logreg", "svm"])
    Runner(suite, RunOptions(out=tmp_path / "out", data_roots=[str(tmp_path)], cache_dir=str(tmp_path / "c"),
                             quiet=True, device="cpu", solver="torch"), command=["test"]).run()
    df = pd.read_csv(tmp_path / "out" / "results.csv")
    assert list(df.solver) == ["torch", "torch"] and (df.tol == probe.DEFAULT_TOL).all()
    assert (df.max_iter == probe.DEFAULT_MAX_ITER).all() and (df.n_iter > 0).all() and df.converged.all()
    with pytest.raises(FeatbenchError, match="unknown solver 'newton'"):
        Runner(suite, RunOptions(out=tmp_path / "o2", data_roots=[str(tmp_path)], solver="newton"), command=["t"]).resolve()


def test_gpu_check_note_carries_each_step_and_the_transfer_table(tmp_path):
    """The note's assembly, with the commands replaced by a stand-in that writes what each would
    (the real commands run only on a GPU machine)."""
    import subprocess

    import pandas as pd

    from featbench.gpu_check import gpu_check

    calls = []

    def fake_run(cmd, **kw):
        calls.append(cmd)
        if "run" in cmd:
            out = __import__("pathlib").Path(cmd[cmd.index("--out") + 1])
            out.mkdir(parents=True)
            pd.DataFrame([{"task": "t", "classifier": "finetune-head:bn=train", "top1": 0.5, "mean_class_acc": 0.5,
                           "epochs": 3, "train_s": 2.0, "train_img_per_s": 100.0, "device": "cuda:0"}]
                         ).to_csv(out / "results.csv", index=False)
            return subprocess.CompletedProcess(cmd, 0, "", "")
        return subprocess.CompletedProcess(cmd, 1 if "probe-bench" in cmd else 0, "| n | fit_s |\n|---|---|\n| 10 | 1 |\n",
                                           "Traceback: out of memory")

    status = gpu_check(tmp_path, echo=lambda s: None, gpu="Test GPU (1 GiB)", run=fake_run, data_root="/data")
    note = (tmp_path / "gpu-check.md").read_text()
    assert status == 1 and len(calls) == 3 and "--data-root" in calls[2] and "cuda" in calls[2]
    assert "GPU: Test GPU (1 GiB)" in note and "(exit 1," in note and "out of memory" in note
    assert "| t | finetune-head:bn=train | 0.5 | 0.5 | 3 | 2 | 100 | cuda:0 |" in note
    assert len(calls) == 3 and gpu_check(tmp_path / "b", echo=lambda s: None, gpu="G", run=fake_run) == 1
    assert len(calls) == 5  # without data_root: no transfer run


def test_probe_compare_says_whether_the_agreement_bar_is_met(tmp_path):
    import json

    from featbench.probe_compare import compare

    def run(name, records):
        (tmp_path / name).mkdir()
        rows = [dict(task="t", trial=0, extractor=f"e{i}", layer="", method="none", classifier="logreg", n_train=10,
                     dim=5, C=C, top1=top1, fit_s=fit_s, n_iter=3, converged=True) for i, (C, top1, fit_s) in enumerate(records)]
        (tmp_path / name / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return tmp_path / name

    ref = run("ref", [(1.0, 0.50, 9.0)] * 10)
    good = run("good", [(1.0, 0.503, 1.0)] * 9 + [(10.0, 0.498, 1.0)])
    bad = run("bad", [(1.0, 0.50, 1.0)] * 9 + [(10.0, 0.51, 1.0)])  # one record a point away
    old = run("old", [(0.1, 0.45, 2.0)] * 10)
    assert "new converged on 10; agreement" in compare(good, old, ref) and "): met" in compare(good, old, ref)
    assert "): NOT met" in compare(bad, old, ref) and "old / new = 2.00" in compare(good, old, ref)
    alone = compare(good, None, ref)  # no run of the old setting: its columns are left out
    assert "): met" in alone and "C new/ref" in alone and "old" not in alone


@pytest.mark.parametrize("d", [300, 20])
def test_torch_paths_features_are_the_scikit_learn_pipelines(d):
    """The torch path standardises and projects through the Gram matrix; the rows it gives have the
    same inner products as StandardScaler + RowSpan's (the span's basis may differ by a rotation)."""
    from sklearn.pipeline import make_pipeline

    from featbench.classifier import RowSpan, _SpanFeatures

    rng = np.random.default_rng(9)
    X, X_new = (rng.normal(size=(n, d)).astype(np.float32) * rng.uniform(0.5, 3, d) + 2 for n in (60, 25))
    ours = _SpanFeatures(X)
    ref = make_pipeline(StandardScaler(), RowSpan()).fit(X)
    A, B = ours.train.astype(np.float64), ours.transform(X_new).astype(np.float64)
    Ar, Br = (ref.transform(Z).astype(np.float64) for Z in (X, X_new))
    assert ours.orthogonal == (d > 60) and A.shape == Ar.shape
    np.testing.assert_allclose(A @ A.T, Ar @ Ar.T, atol=1e-3 * d)
    np.testing.assert_allclose(B @ A.T, Br @ Ar.T, atol=1e-3 * d)
