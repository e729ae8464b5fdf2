"""Property-based fuzzing (Hypothesis) of the image decoder and of the spec, suite, task, method and
option parsers: whatever the input, the only exceptions are featbench's own (FeatbenchError, and
ImageDecodeError for image bytes).

Examples are few (the suite stays fast) and derandomised with no example database, so CI runs the
same inputs every time; raise ``FUZZ_EXAMPLES`` locally for a longer campaign.
"""
from __future__ import annotations

import io
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from featbench.adaptation import parse_method
from featbench.datasets.images import ImageDecodeError, decode_bytes
from featbench.datasets.tasks import parse_task_name
from featbench.errors import FeatbenchError
from featbench.features import available, create
from featbench.features.base import parse_spec, split_specs
from featbench.speed import parse_batch_sizes
from featbench.suite import SUITE_KEYS, TASK_KEYS, load_suite, parse_suite

from hostile import photo

FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", 60)), derandomize=True, database=None,
                deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _encoded() -> dict[str, bytes]:
    img = Image.fromarray(photo(24, 32))
    out = {}
    for fmt, kw in (("JPEG", {"quality": 80}), ("PNG", {}), ("GIF", {}), ("TIFF", {}), ("WEBP", {}), ("BMP", {}),
                    ("PPM", {})):
        buf = io.BytesIO()
        (img.convert("P") if fmt == "GIF" else img).save(buf, fmt, **kw)
        out[fmt] = buf.getvalue()
    return out


ENCODED = _encoded()


def _decodes_or_refuses(data: bytes) -> None:
    try:
        img = decode_bytes(data, "fuzz")
    except ImageDecodeError as exc:
        assert str(exc).startswith("fuzz: ")
        return
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3


@FUZZ
@given(st.binary(max_size=4096))
def test_decoder_on_random_bytes(data):
    _decodes_or_refuses(data)


@FUZZ
@given(st.sampled_from(sorted(ENCODED)), st.floats(0, 1))
def test_decoder_on_truncated_images(fmt, fraction):
    data = ENCODED[fmt]
    _decodes_or_refuses(data[:int(len(data) * fraction)])


@FUZZ
@given(st.sampled_from(sorted(ENCODED)), st.lists(st.tuples(st.integers(0, 10 ** 6), st.integers(0, 255)),
                                                 min_size=1, max_size=8))
def test_decoder_on_corrupted_images(fmt, flips):
    data = bytearray(ENCODED[fmt])
    for pos, value in flips:
        data[pos % len(data)] = value
    _decodes_or_refuses(bytes(data))


# -- parsers ---------------------------------------------------------------------------------------

NAMES = sorted(n for n in available() if n != "cnn")
WORDS = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
VALUES = st.one_of(WORDS, st.integers(-5, 5000).map(str), st.sampled_from(["none", "true", "1+2", "0.5", "-1", "+", ""]))


@st.composite
def specs(draw) -> str:
    """Mostly near-valid specs (a registered name, options with odd values), sometimes pure junk."""
    if draw(st.booleans()):
        return draw(st.text(max_size=40))
    name = draw(st.sampled_from(NAMES))
    layer = draw(st.sampled_from(["", "@" + draw(WORDS)]))
    keys = draw(st.lists(st.one_of(st.sampled_from(["k", "size", "cell", "step", "sizes", "levels", "norm", "kmap",
                                                    "pca", "max_side", "root", "n_features", "hessian", "bins",
                                                    "block", "max_desc", "extended"]), WORDS), max_size=3))
    opts = ",".join(f"{k}={draw(VALUES)}" for k in keys)
    return name + layer + (":" + opts if opts else "")


@FUZZ
@given(specs())
def test_spec_parsing_and_construction(spec):
    try:
        parse_spec(spec)
        ex = create(spec)
        ex.check()
        assert create(ex.spec).config == ex.config  # what was accepted round-trips
    except FeatbenchError:
        pass


@FUZZ
@given(st.text(max_size=80))
def test_extractor_list_option(text):
    assert all(s.strip() == s and s for s in split_specs(text))


@FUZZ
@given(st.text(max_size=40))
def test_task_names(text):
    try:
        dataset, source, target = parse_task_name(text)
    except FeatbenchError:
        return
    assert dataset and (source is None) == (target is None)


@FUZZ
@given(st.text(max_size=40))
def test_adaptation_methods(text):
    try:
        parse_method(text)
    except FeatbenchError:
        pass


@FUZZ
@given(st.text(max_size=30))
def test_batch_sizes_option(text):
    try:
        sizes = parse_batch_sizes(text)
    except FeatbenchError:
        return
    assert sizes and all(isinstance(b, int) and b >= 1 for b in sizes)


TOML_VALUES = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.text(max_size=8),
                                     st.floats(allow_nan=False)),
                           lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                   st.dictionaries(st.sampled_from(sorted(TASK_KEYS) + ["x"]), inner,
                                                                   max_size=3)),
                           max_leaves=8)


@FUZZ
@given(st.dictionaries(st.sampled_from(sorted(SUITE_KEYS) + ["trails"]), TOML_VALUES, max_size=6))
def test_suite_contents(data):
    try:
        parse_suite({k: v for k, v in data.items() if v is not None}, "fuzz.toml")
    except FeatbenchError:
        pass


@FUZZ
@given(st.text(max_size=200))
def test_suite_files(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("suite") / "fuzz.toml"
    path.write_text(text, encoding="utf-8")
    try:
        load_suite(str(path))
    except FeatbenchError:
        pass


@pytest.mark.parametrize("spec", ["hog:size=abc", "hog:cell=0", "sift-bow:k=-1", "orb-bow:root=true",
                                  "sift-dense-bow:step=0", "sift-dense-vlad:pca=0", "hog:size=none"])
def test_known_bad_specs_are_featbench_errors(spec):
    with pytest.raises(FeatbenchError):
        create(spec).check()
