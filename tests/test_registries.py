"""The one registry type and the one option grammar, across every pluggable kind."""
import subprocess
import sys

import pytest

from featbench.adaptation import METHODS, parse_method
from featbench.classifier import CLASSIFIERS, fit_evaluate, make_classifier
from featbench.datasets.protocols import PROTOCOLS
from featbench.datasets.readers import LAYOUTS
from featbench.errors import FeatbenchError
from featbench.features.base import EXTRACTORS, parse_spec
from featbench.options import format_value, parse_options, parse_value
from featbench.registry import Registry
from featbench.reports.sections import SECTIONS


def test_registry_registers_once_and_names_the_known_ones():
    reg = Registry("widget")

    @reg.register("a", summary="the a", order=3)
    def a():
        """Docstring."""

    reg.register("b", len)
    assert reg.names() == ["a", "b"] and "a" in reg and "c" not in reg
    assert reg.entry("a").meta == {"order": 3} and reg.summaries()["a"] == "the a"
    assert reg.get("a") is a
    reg.register("a", a)  # the same object again (a module re-import) is fine
    with pytest.raises(FeatbenchError, match="widget 'a' is registered twice"):
        reg.register("a", print)
    with pytest.raises(FeatbenchError, match=r"unknown widget 'zz'; known: a, b"):
        reg.get("zz")


def test_every_kind_uses_the_registry_and_is_listed():
    for reg, some in ((EXTRACTORS, {"hog", "cnn"}), (PROTOCOLS, {"given", "caltech101-30"}),
                      (CLASSIFIERS, {"logreg", "svm"}), (METHODS, {"none", "coral"}),
                      (SECTIONS, {"summary", "speed-detail"}), (LAYOUTS, {"manifest", "sun397"})):
        assert isinstance(reg, Registry) and some <= set(reg.names())
    assert LAYOUTS.names()[0] == "manifest" and LAYOUTS.names()[-1] == "imagefolder"
    from typer.testing import CliRunner

    from featbench.cli import app

    for kind in ("classifiers", "methods", "sections", "layouts"):
        res = CliRunner().invoke(app, ["list", kind])
        assert res.exit_code == 0 and res.output.strip()
    res = CliRunner().invoke(app, ["list", "nope"])
    assert res.exit_code == 2 and "classifiers" in res.output


def test_unknown_classifier_fails_before_any_work():
    with pytest.raises(FeatbenchError, match="unknown classifier 'knn'; known: 1nn, logreg, svm"):
        make_classifier("knn")
    with pytest.raises(FeatbenchError, match="unknown classifier"):
        fit_evaluate([[0.0]], [0], [[0.0]], [0], kind="knn")


def test_a_classifier_without_c_is_one_registration(monkeypatch):
    from sklearn.neighbors import KNeighborsClassifier

    monkeypatch.setattr(CLASSIFIERS, "_entries", dict(CLASSIFIERS._entries))
    CLASSIFIERS.register("nn-test", lambda C=1.0, seed=0, warm_start=False: KNeighborsClassifier(1), tunes_c=False)
    X = [[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]]
    ev = fit_evaluate(X, [0, 0, 1, 1], [[0.2, 0.1], [4.9, 5.2]], [0, 1], kind="nn-test")
    assert ev.top1 == 1.0 and ev.C != ev.C  # C is NaN: none was chosen


def test_section_ids_are_unique_whatever_is_imported_first():
    code = ("import importlib, sys\n"
            "for m in sys.argv[1:]: importlib.import_module(m)\n"
            "from featbench.reports.sections import registered\n"
            "print(','.join(sid for _, sid, _ in registered()))\n")
    orders = [["featbench.reports.speed_page", "featbench.speed"], ["featbench.reports.sections"]]
    outs = {subprocess.run([sys.executable, "-c", code, *o], capture_output=True, text=True, check=True).stdout
            for o in orders}
    assert len(outs) == 1
    ids = outs.pop().strip().split(",")
    assert len(ids) == len(set(ids)) and "speed-detail" in ids and "speed-details" not in ids


def test_one_option_grammar_for_extractors_and_methods():
    text = "k=400,levels=1+2,x=none,flag=true,lr=0.5,norm=l2"
    want = {"k": 400, "levels": [1, 2], "x": None, "flag": True, "lr": 0.5, "norm": "l2"}
    assert parse_options(text, "t") == want
    assert parse_spec("hog:" + text).options == want
    assert parse_method("sa:" + text) == ("sa", want)
    for v in (3, 0.5, True, None, [1, 2], "abc"):
        assert parse_value(format_value(v)) == v
    with pytest.raises(FeatbenchError, match="adaptation method 'sa:d': option 'd' is not key=value"):
        parse_method("sa:d")


def test_plugins_come_from_entry_points(monkeypatch):
    """A classifier (or protocol, method, report section) can come from another package."""
    from importlib import metadata

    ep = metadata.EntryPoint(name="nearest-centroid", value="sklearn.neighbors:NearestCentroid",
                             group="featbench.classifiers")
    real = metadata.entry_points
    monkeypatch.setattr(metadata, "entry_points",
                        lambda **kw: [ep] if kw.get("group") == "featbench.classifiers" else real(**kw))
    monkeypatch.setattr(CLASSIFIERS, "_loaded", False)
    monkeypatch.setattr(CLASSIFIERS, "_entries", dict(CLASSIFIERS._entries))
    assert "nearest-centroid" in CLASSIFIERS.names()
    from sklearn.neighbors import NearestCentroid

    assert CLASSIFIERS.get("nearest-centroid") is NearestCentroid
    assert {"logreg", "svm"} <= set(CLASSIFIERS.names())
