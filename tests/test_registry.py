"""Spec grammar, registry and the featbench.extractors entry-point group."""
from importlib import metadata

import numpy as np
import pytest

from featbench.errors import FeatbenchError
from featbench.features import available, base, create, parse_spec


def test_spec_grammar():
    p = parse_spec("cnn:tf_efficientnet_lite0@blocks.5+pre_logits:pool=max,l2=true")
    assert (p.name, p.target, p.layers) == ("cnn", "tf_efficientnet_lite0", ("blocks.5", "pre_logits"))
    assert p.options == {"pool": "max", "l2": True}
    p = parse_spec("sift-dense-bow-spm:k=400,levels=3,norm=hellinger,lr=0.5,x=none")
    assert p.options == {"k": 400, "levels": 3, "norm": "hellinger", "lr": 0.5, "x": None}
    assert parse_spec("x:levels=1+2").options == {"levels": [1, 2]}
    with pytest.raises(FeatbenchError, match="not key=value"):
        parse_spec("hog:size")
    with pytest.raises(FeatbenchError, match="needs a model"):
        parse_spec("cnn")


def test_spec_roundtrip_and_config_is_hashable():
    ex = create("hog:size=64,bins=12")
    assert ex.spec == "hog:size=64,bins=12"  # non-default options, in declaration order
    assert create(ex.spec).config == ex.config
    assert len({ex.config, create("hog:bins=12,size=64").config}) == 1


def test_constructor_only_stores_parameters():
    ex = create("hog:size=64")
    assert ex.get_params() == {"size": 64, "cell": 8, "block": 2, "bins": 9}
    with pytest.raises(FeatbenchError, match="takes no @layer"):
        create("hog@layer1")


def test_entry_point_plugins_are_loaded(monkeypatch):
    ep = metadata.EntryPoint(name="mean-colour", value="plugin_example:MeanColour", group=base.ENTRY_POINT_GROUP)
    real = metadata.entry_points

    def fake(**kw):
        return [ep] if kw.get("group") == base.ENTRY_POINT_GROUP else real(**kw)

    monkeypatch.setattr(metadata, "entry_points", fake)
    monkeypatch.setattr(base.EXTRACTORS, "_loaded", False)
    monkeypatch.setattr(base.EXTRACTORS, "_entries", dict(base.EXTRACTORS._entries))
    assert "mean-colour" in available()
    ex = create("mean-colour:scale=2")
    feats = ex.transform([np.full((4, 4, 3), 10, np.uint8)])
    assert feats.dtype == np.float32 and feats.tolist() == [[20.0, 20.0, 20.0]]


def test_broken_plugin_warns_and_does_not_break(monkeypatch):
    ep = metadata.EntryPoint(name="broken", value="no_such_module_xyz:Thing", group=base.ENTRY_POINT_GROUP)
    monkeypatch.setattr(metadata, "entry_points", lambda **kw: [ep])
    monkeypatch.setattr(base.EXTRACTORS, "_loaded", False)
    monkeypatch.setattr(base.EXTRACTORS, "_entries", dict(base.EXTRACTORS._entries))
    with pytest.warns(UserWarning, match="broken"):
        names = available()
    assert "hog" in names and "broken" not in names
