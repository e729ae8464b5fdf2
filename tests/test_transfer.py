"""The transfer study: learning-curve splits, fine-tuning as an evaluation, and their report sections."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from featbench.datasets.folder import read_dataset
from featbench.datasets.learning_curve import TrainSubsample, curve_size_of, curve_sizes
from featbench.datasets.protocols import make_protocol
from featbench.errors import FeatbenchError
from featbench.features import create
from featbench.finetune import (RECIPE, _predict, _loader, finetune_evaluate, init_head_from_probe, last_stage, new_head,
                                parse_finetune, trainable_parameters, transforms_for)
from featbench.reports import build_report
from featbench.runner import RunOptions, Runner
from featbench.suite import Suite, TaskSpec, parse_suite

from helpers import make_texture_folder

SMALL_CNN = "cnn:tf_efficientnet_lite0:size=32"


@pytest.fixture(scope="module")
def textures(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_texture_folder(root / "textures", per_class=6, size=48)
    return root


# -- learning-curve splits ---------------------------------------------------------------------

def test_subsample_keeps_test_and_nests_training_sets(textures):
    ds = read_dataset(textures / "textures")
    inner = make_protocol("given")
    full = inner.split(ds, seed=3)
    sets = {}
    for n in (1, 2, 4):
        split = TrainSubsample(inner, n).split(ds, seed=3)
        assert [r.uid for r in split.test] == [r.uid for r in full.test]
        counts = pd.Series([r.label for r in split.train]).value_counts()
        assert set(counts) == {n} and len(counts) == 3
        sets[n] = {r.uid for r in split.train}
    assert sets[1] < sets[2] < sets[4]
    again = TrainSubsample(inner, 2).split(ds, seed=3)
    other = TrainSubsample(inner, 2).split(ds, seed=4)
    assert {r.uid for r in again.train} == sets[2]
    assert {r.uid for r in other.train} != sets[2]
    assert "train_per_class=2" in TrainSubsample(inner, 2).describe()


def test_subsample_notes_small_classes(textures):
    ds = read_dataset(textures / "textures")
    split = TrainSubsample(make_protocol("given"), 50).split(ds, seed=0)
    assert len(split.train) == 18 and any("< 50 training images" in n for n in split.notes)


def test_curve_names_and_suite_validation():
    assert curve_size_of("caltech101#n=5") == 5 and curve_size_of("office:a->w#st") is None
    assert curve_sizes([5, 1, 5], "x") == [1, 5]
    for bad in ([], [0], ["a"], [True], 2.5):
        with pytest.raises(FeatbenchError, match="train_per_class"):
            parse_suite({"tasks": [{"name": "t", "train_per_class": bad}], "extractors": ["hog"]}, "suite.toml")
    suite = parse_suite({"tasks": [{"name": "t", "train_per_class": [10, 1]}], "extractors": ["hog"]}, "s")
    assert suite.tasks[0].train_per_class == [1, 10]


# -- fine-tuning -------------------------------------------------------------------------------

def test_head_mode_trains_only_the_last_stage_and_a_new_head():
    cnn = create(SMALL_CNN)
    net = cnn.pretrained_model()
    head = cnn.classifier_module_name(net)
    assert last_stage(net, head) == "blocks.6"
    new_head(net, head, 4)
    assert net.get_classifier().out_features == 4
    trained, body = trainable_parameters(net, "finetune-head", head)
    names = {n for n, p in net.named_parameters() if p.requires_grad}
    assert names and all(n.startswith(("blocks.6", "conv_head", "bn2", "classifier")) for n in names)
    assert any(n.startswith("classifier") for n in names)
    # the new head at the head's rate; the pretrained last stage at the backbone rate
    by_id = {id(p): n for n, p in net.named_parameters()}
    assert {by_id[id(p)].split(".")[0] for p in trained} == {"classifier"}
    assert body and not any(by_id[id(p)].startswith("classifier") for p in body)
    assert len(trained) + len(body) == len(names)
    net_all = cnn.pretrained_model()
    new_head(net_all, head, 4)
    h, b = trainable_parameters(net_all, "finetune-all", head)
    assert len(h) == 2 and len(h) + len(b) == len(list(net_all.parameters()))


@pytest.mark.parametrize("bn", ["eval", "train"])
def test_head_mode_leaves_everything_below_the_last_stage_as_it_was(bn):
    """finetune-head trains the last stage and the head only: every weight and every BatchNorm
    statistic below it is the pretrained one after training, with either BatchNorm setting
    (``bn`` applies to the layers that train); ``bn=train`` moves the last stage's statistics."""
    from featbench.finetune import _train

    cnn = create(SMALL_CNN)
    cnn.configure_runtime(device="cpu")
    ims, y = _images(12), [i % 3 for i in range(12)]
    before = cnn.pretrained_model().state_dict()
    net, _, _ = _train(cnn, "finetune-head", 3, ims, y, 1, {**RECIPE, "batch_size": 6, "bn": bn}, 0, torch.device("cpu"))
    after = net.state_dict()
    trained = ("blocks.6", "conv_head", "bn2", "classifier")
    below = [k for k in before if not k.startswith(trained)]
    assert below and all(torch.equal(before[k], after[k]) for k in below)
    stage_stats = [k for k in before if k.startswith("blocks.6") and k.endswith("running_mean")]
    assert stage_stats and any(not torch.equal(before[k], after[k]) for k in stage_stats) == (bn == "train")


def test_torchvision_last_stage():
    cnn = create("cnn:resnet18:weights=random")
    net = cnn.pretrained_model()
    assert cnn.classifier_module_name(net) == "fc" and last_stage(net, "fc") == "layer4"


def _images(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (40, 48, 3), dtype=np.uint8) for _ in range(n)]


def test_finetune_is_seeded_and_records_its_recipe():
    cnn = create(SMALL_CNN)
    cnn.configure_runtime(device="cpu")
    ims, y = _images(12), [i % 3 for i in range(12)]
    recipe = {"epochs": 2, "batch_size": 6}
    a = finetune_evaluate(cnn, "finetune-head", ims, y, ims[:6], y[:6], 3, seed=1, recipe=recipe)
    b = finetune_evaluate(cnn, "finetune-head", ims, y, ims[:6], y[:6], 3, seed=1, recipe=recipe)
    assert np.array_equal(a.evaluation.y_pred, b.evaluation.y_pred)
    assert a.evaluation.cv_score == b.evaluation.cv_score
    assert 1 <= a.epochs <= 2 and a.recipe["epochs"] == 2 and a.recipe["optimizer"] == "adamw"
    assert a.train_s > 0 and a.train_img_per_s > 0 and a.device == "cpu"
    one = finetune_evaluate(cnn, "finetune-all", ims[:3], y[:3], ims[:3], y[:3], 3, seed=0, recipe=recipe)
    assert np.isnan(one.evaluation.cv_score) and one.epochs == 2  # one image per class: nothing held out


def test_probe_head_init_starts_at_the_linear_probes_predictions():
    """LP-FT: before any step, the network with head_init=probe predicts what featbench's logistic
    regression predicts on the same pooled features."""
    from featbench.classifier import fit_evaluate

    cnn = create(SMALL_CNN)
    cnn.configure_runtime(device="cpu")
    ims, y = _images(18, seed=3), [i % 3 for i in range(18)]
    net = cnn.pretrained_model()
    head = cnn.classifier_module_name(net)
    new_head(net, head, 3)
    _, eval_tf = transforms_for(cnn.preprocess, RECIPE)
    init_head_from_probe(net, head, ims, y, 3, eval_tf, torch.device("cpu"), seed=0)
    feats = []
    hook = net.get_submodule(head).register_forward_pre_hook(lambda _m, a: feats.append(a[0].detach().numpy()))
    predicted = _predict(net, _loader(ims, y, eval_tf, 64, False, 0, 0), torch.device("cpu"))
    hook.remove()
    probe = fit_evaluate(np.concatenate(feats), np.array(y), np.concatenate(feats), np.array(y), seed=0)
    assert np.array_equal(predicted, probe.y_pred)
    res = finetune_evaluate(cnn, "finetune-head", ims, y, ims[:6], y[:6], 3, seed=0,
                            recipe={"epochs": 1, "head_init": "probe"})
    assert res.recipe["head_init"] == "probe" and parse_finetune("finetune-all:head_init=probe")[1] == {"head_init": "probe"}
    with pytest.raises(FeatbenchError, match="head_init must be"):
        parse_finetune("finetune-all:head_init=zeros")


def test_finetune_refuses_other_extractors():
    with pytest.raises(FeatbenchError, match="only cnn"):
        finetune_evaluate(create("hog"), "finetune-head", _images(3), [0, 1, 2], _images(3), [0, 1, 2], 3)
    with pytest.raises(FeatbenchError, match="unknown fine-tuning evaluation .finetune-some"):
        finetune_evaluate(create(SMALL_CNN), "finetune-some", _images(3), [0, 1, 2], _images(3), [0, 1, 2], 3)


def test_finetune_specs_carry_recipe_options():
    assert parse_finetune("finetune-all") == ("finetune-all", {})
    assert parse_finetune("finetune-head:bn=train,epochs=5,lr_head=3e-4") == (
        "finetune-head", {"bn": "train", "epochs": 5, "lr_head": 3e-4})
    for bad, message in (("finetune-head:optimizer=sgd", "unknown recipe option 'optimizer'"),
                         ("finetune-head:epochs=2.5", "'epochs' must be int"),
                         ("finetune-head:bn=batch", "bn must be 'eval'"),
                         ("finetune-head:epochs=0", "at least 1"),
                         ("finetune-head:holdout=1", "holdout must be in"),
                         ("finetune-head:epochs", "not key=value")):
        with pytest.raises(FeatbenchError, match=message):
            parse_finetune(bad)
    with pytest.raises(FeatbenchError, match="unknown recipe option 'lr'"):  # reported before any work starts
        Runner(Suite(name="s", extractors=[SMALL_CNN], classifiers=["finetune-head:lr=1"],
                     tasks=[TaskSpec(name="textures")]), RunOptions(out="/nonexistent/x", quiet=True)).resolve()


# -- through the runner and the report --------------------------------------------------------------

@pytest.mark.slow
def test_learning_curve_with_finetuning_end_to_end(tmp_path, textures, monkeypatch):
    suite = Suite(name="curve", extractors=["hog:size=32", SMALL_CNN], classifiers=["logreg", "finetune-head:epochs=1"],
                  tasks=[TaskSpec(name="textures", train_per_class=[1, 3], trials=2)])
    out = tmp_path / "run"
    Runner(suite, RunOptions(out=out, data_roots=[str(textures)], cache_dir=str(tmp_path / "cache"),
                             quiet=True, batch_size=8), command=["test"]).run()
    df = pd.read_csv(out / "results.csv")
    assert set(df["task"]) == {"textures#n=1", "textures#n=3"}
    assert set(df["train_per_class"]) == {1, 3}
    assert set(df.groupby("task")["n_train"].max()) == {3, 9}
    ft = df[df["classifier"] == "finetune-head:epochs=1"]
    assert len(ft) == 4 and set(ft["epochs"]) == {1} and set(ft["extractor"]) == {SMALL_CNN} and set(ft["layer"]) == {"finetuned"}
    assert all(json.loads(r)["optimizer"] == "adamw" for r in ft["recipe"]) and (ft["train_s"] > 0).all()
    assert not df.loc[df["classifier"] == "logreg", "recipe"].notna().any()
    meta = json.loads((out / "run.json").read_text())
    assert any("not applicable to hog:size=32" in n for n in meta["tasks"]["textures#n=1"]["notes"])
    report = tmp_path / "report"
    build_report([out], report)
    md = (report / "report.md").read_text()
    assert "## Learning curves" in md and "figures/learning-curve-textures.png" in md
    assert "decision map" in md and "| textures#n=3 |" in md
    assert (report / "figures" / "learning-curve-textures.png").stat().st_size > 1000


def _decision_ctx(rows):
    """What decision_rows reads: per-trial records (df) and their aggregate (agg)."""
    from types import SimpleNamespace

    df = pd.DataFrame([{"task": "t", "method": "none", "layer": "", "extract_s": 0.0, "fit_s": cost, "n_test": n_test,
                        "extractor": ex, "classifier": clf} for ex, clf, _, _, _, cost, n_test in rows])
    agg = pd.DataFrame([{"task": "t", "method": "none", "layer": "", "metric": "top1", "extractor": ex, "classifier": clf,
                         "extractor_family": "cnn" if ex.startswith("cnn") else "classical", "acc_mean": acc,
                         "acc_std": std, "n_trials": trials} for ex, clf, acc, std, trials, _, _ in rows])
    return SimpleNamespace(df=df, agg=agg)


def test_decision_map_picks_the_cheapest_of_the_ways_within_noise():
    from featbench.reports.sections_transfer import decision_rows, standard_error, within_noise

    assert standard_error(0.9, 0.02, 4, 100) == pytest.approx(0.01)  # spread over trials
    assert standard_error(0.9, np.nan, 1, 100) == pytest.approx(0.03)  # binomial, one test set
    assert within_noise((0.90, 0.01), (0.88, 0.01)) and not within_noise((0.90, 0.01), (0.85, 0.01))
    assert not within_noise((0.90, np.nan), (0.90, np.nan))  # no error estimate: no tie
    # fine-tuning is 0.5 point better than the probe, well within noise, and 50x dearer: pick the probe
    (rec,) = decision_rows(_decision_ctx([
        ("hog", "logreg", 0.60, 0.02, 3, 1.0, 300),
        ("cnn:m", "logreg", 0.900, 0.01, 3, 10.0, 300),
        ("cnn:m", "finetune-all", 0.905, 0.01, 3, 500.0, 300)]))
    assert rec["tied"] == ["CNN features + linear", "finetune-all"] and rec["winner"] == "CNN features + linear"
    # clearly better: fine-tuning wins despite its cost
    (rec,) = decision_rows(_decision_ctx([
        ("cnn:m", "logreg", 0.80, 0.01, 3, 10.0, 300),
        ("cnn:m", "finetune-all", 0.90, 0.01, 3, 500.0, 300)]))
    assert rec["tied"] == ["finetune-all"] and rec["winner"] == "finetune-all"


def test_decision_map_costs_do_not_depend_on_the_feature_cache():
    """A linear way costs its images at the recorded extraction speed plus its fit, whether the
    features were computed in the run (extract_s > 0) or read back (0); fine-tuning costs its fit_s."""
    from featbench.reports.sections_transfer import record_costs

    df = pd.DataFrame([
        {"classifier": "logreg", "n_train": 30, "n_test": 70, "img_per_s": 50.0, "extract_s": 2.1, "fit_s": 0.5},
        {"classifier": "logreg", "n_train": 30, "n_test": 70, "img_per_s": 50.0, "extract_s": 0.0, "fit_s": 0.5},
        {"classifier": "logreg", "n_train": 30, "n_test": 70, "img_per_s": np.nan, "extract_s": 3.0, "fit_s": 0.5},
        {"classifier": "finetune-all:epochs=3", "n_train": 30, "n_test": 70, "img_per_s": 50.0, "extract_s": 2.1,
         "fit_s": 40.0}])
    assert record_costs(df).tolist() == pytest.approx([2.5, 2.5, 3.5, 40.0])
