"""Protocols: split sizes, seeds, trial determinism, leakage, duplicates, small/missing classes."""
from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featbench.datasets.folder import Dataset, ImageRecord
from featbench.datasets.protocols import (COMMON_OPTIONS, Split, make_protocol, protocols,
                                          saenko_source_count)
from featbench.datasets.readers import AnnotatedDataset
from featbench.datasets.tasks import default_protocol, parse_task_name, resolve_task
from featbench.datasets.validation import validate_split
from featbench.errors import FeatbenchError

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
STAGED = Path("~/featbench-data").expanduser()


def rec(label: str, group: str, i: int, uid: str | None = None) -> ImageRecord:
    relpath = f"{group}/{label}/{i:04d}.jpg"
    return ImageRecord(uid=uid or hashlib.sha256(relpath.encode()).hexdigest(), label=label, group=group,
                       relpath=relpath)


def dataset(counts: dict[str, dict[str, int]], name: str = "toy") -> Dataset:
    """counts: group -> class -> number of images."""
    return Dataset(name=name, records=[rec(c, g, i) for g, per in counts.items() for c, n in per.items()
                                       for i in range(n)])


def uids(records) -> set[str]:
    return {r.uid for r in records}


def per_class(records) -> Counter:
    return Counter(r.label for r in records)


def test_registry_lists_every_protocol():
    names = set(protocols())
    assert {"given", "per-class", "caltech101-30", "caltech101-15", "scene15-100", "sun397-partitions",
            "source-only-full", "source-only-sampled", "source+target"} <= names
    for cls in protocols().values():
        assert (cls.__doc__ or "").strip(), cls.name


def test_unknown_option_and_bad_choice_are_errors():
    with pytest.raises(FeatbenchError, match="unknown option"):
        make_protocol("caltech101-30", train=15)  # presets fix the training count
    with pytest.raises(FeatbenchError, match="duplicates must be one of"):
        make_protocol("given", duplicates="ignore")
    with pytest.raises(FeatbenchError, match="unknown protocol"):
        make_protocol("caltech-30")


def test_describe_shows_own_options_and_changed_common_ones():
    assert make_protocol("caltech101-30").describe() == "caltech101-30:exclude=BACKGROUND_Google,pool=all,test=50"
    assert make_protocol("given").describe() == "given:test=test,train=auto"
    assert make_protocol("given", crop=1.5).describe() == "given:crop=1.5,test=test,train=auto"
    assert "duplicates=keep" in make_protocol("source-only-full", duplicates="keep").describe()
    assert make_protocol("source-only-full").describe() == "source-only-full"
    assert set(COMMON_OPTIONS) == {"duplicates", "missing_classes"}


# -- per-class sampling ----------------------------------------------------------------------------

def test_per_class_sizes_seeds_and_no_leakage():
    ds = dataset({"all": {"a": 40, "b": 90, "c": 31}})
    proto = make_protocol("per-class", train=30, test=50)
    s0, s0_again, s1 = proto.split(ds, 0), proto.split(ds, 0), proto.split(ds, 1)
    assert per_class(s0.train) == {"a": 30, "b": 30, "c": 30}
    assert per_class(s0.test) == {"a": 10, "b": 50, "c": 1}
    assert not uids(s0.train) & uids(s0.test)
    assert [r.uid for r in s0.train] == [r.uid for r in s0_again.train]  # same seed, same split
    assert [r.uid for r in s0.test] == [r.uid for r in s0_again.test]
    assert uids(s0.train) != uids(s1.train)  # another trial, another split
    assert s0.notes == [] and s0.stats == {}


def test_per_class_split_ignores_reader_order():
    ds = dataset({"all": {"a": 40, "b": 40}})
    shuffled = Dataset(name="toy", records=list(reversed(ds.records)))
    proto = make_protocol("per-class", train=5, test=5)
    assert uids(proto.split(ds, 3).train) == uids(proto.split(shuffled, 3).train)


def test_per_class_small_class_is_noted_and_class_without_test_too():
    ds = dataset({"all": {"a": 40, "tiny": 20}})
    s = make_protocol("per-class", train=30, test="all").split(ds, 0)
    assert per_class(s.train) == {"a": 30, "tiny": 20}
    assert per_class(s.test) == {"a": 10}
    assert any("class 'tiny' has 20 < 30 images; all used" in n for n in s.notes)
    assert any("class(es) with no test image: tiny" in n for n in s.notes)
    assert s.stats["classes_without_test"] == 1


def test_per_class_pool_and_exclude():
    ds = dataset({"train": {"a": 10, "b": 10, "bg": 10}, "test": {"a": 10, "b": 10, "bg": 10}})
    s = make_protocol("per-class", train=5, test="all", pool="train", exclude=["bg"]).split(ds, 0)
    assert {r.group for r in s.train + s.test} == {"train"}
    assert set(per_class(s.train)) == {"a", "b"}
    with pytest.raises(FeatbenchError, match="positive integer"):
        make_protocol("per-class", train=0).split(ds, 0)


def test_caltech101_presets():
    ds = dataset({"train": {"BACKGROUND_Google": 60, "airplanes": 500, "inline_skate": 21},
                  "test": {"BACKGROUND_Google": 30, "airplanes": 300, "inline_skate": 10}}, name="caltech101")
    assert default_protocol(ds, None)[0] == "given"  # its own train/test split wins over the name
    assert default_protocol(dataset({"all": {"a": 1}}, "caltech101"), None)[0] == "caltech101-30"
    for name, n in (("caltech101-30", 30), ("caltech101-15", 15)):
        proto = make_protocol(name)
        assert proto.default_trials == 5 and not proto.deterministic
        s = proto.split(ds, 7)
        assert per_class(s.train) == {"airplanes": n, "inline_skate": n}  # train and test folders pooled
        assert per_class(s.test) == {"airplanes": 50, "inline_skate": 31 - n}
        assert {r.group for r in s.train} == {"train", "test"}
        assert not uids(s.train) & uids(s.test)
        assert any("BACKGROUND_Google" in note for note in s.notes)


def test_scene15_protocol_pools_and_takes_the_rest():
    ds = dataset({"train": {c: 100 for c in "abc"}, "test": {"a": 116, "b": 260, "c": 110}}, name="scene15")
    assert default_protocol(ds, None)[0] == "given"
    assert default_protocol(dataset({"all": {"a": 1}}, "scene15"), None)[0] == "scene15-100"
    s = make_protocol("scene15-100").split(ds, 0)
    assert per_class(s.train) == {"a": 100, "b": 100, "c": 100}
    assert per_class(s.test) == {"a": 116, "b": 260, "c": 110}
    assert len({r.group for r in s.train}) == 2  # drawn from both folders
    assert uids(s.train) != uids(make_protocol("scene15-100").split(ds, 1).train)


# -- given -------------------------------------------------------------------------------------------

def test_given_train_auto_uses_every_non_test_group():
    ds = dataset({"train": {"a": 2, "b": 2}, "val": {"a": 2, "b": 2}, "test": {"a": 3, "b": 3}})
    s = make_protocol("given").split(ds, 0)
    assert {r.group for r in s.train} == {"train", "val"} and len(s.test) == 6
    s = make_protocol("given", train="train").split(ds, 0)
    assert {r.group for r in s.train} == {"train"}
    assert make_protocol("given").deterministic
    with pytest.raises(FeatbenchError, match="no training group"):
        make_protocol("given").split(dataset({"test": {"a": 2}}), 0)


def test_given_crop_needs_boxes():
    with pytest.raises(FeatbenchError, match="no bounding boxes"):
        make_protocol("given", crop=1.5).split(dataset({"train": {"a": 2}, "test": {"a": 2}}), 0)


def test_given_crop_uses_boxes(tmp_path):
    img = tmp_path / "bird.png"
    Image.fromarray(np.zeros((100, 200, 3), np.uint8)).save(img)
    recs = [ImageRecord(uid=f"u{i}", label="a", group=g, relpath=f"{g}/{i}.png", path=str(img))
            for i, g in enumerate(["train", "test"])]
    ds = AnnotatedDataset(name="cub", records=recs, boxes={r.relpath: (50.0, 40.0, 20.0, 10.0) for r in recs})
    s = make_protocol("given", crop=1.5).split(ds, 0)
    assert s.train[0].uid not in {"u0", "u1"} and s.train[0].load().shape == (15, 30, 3)
    assert any("1.5x" in n for n in s.notes)


# -- SUN-397 ------------------------------------------------------------------------------------------

def _sun(partitions: bool) -> AnnotatedDataset:
    recs = [rec(c, "all", i) for c in ("abbey", "bakery/shop") for i in range(120)]
    parts = []
    if partitions:
        for k in range(3):
            rng = np.random.default_rng(k)
            tr, te = [], []
            for c in ("abbey", "bakery/shop"):
                mine = [r.relpath for r in recs if r.label == c]
                order = rng.permutation(len(mine))
                tr += [mine[i] for i in order[:50]]
                te += [mine[i] for i in order[50:100]]
            parts.append((frozenset(tr), frozenset(te)))
    return AnnotatedDataset(name="SUN397", records=recs, partitions=parts, layout="sun397")


def test_sun397_partitions_follow_the_trial_seed():
    ds = _sun(True)
    assert default_protocol(ds, None)[0] == "sun397-partitions"
    proto = make_protocol("sun397-partitions")
    s0, s1, s3 = (proto.split(ds, k) for k in (0, 1, 3))
    assert per_class(s0.train) == {"abbey": 50, "bakery/shop": 50} and len(s0.test) == 100
    assert {r.relpath for r in s0.train} == ds.partitions[0][0]
    assert {r.relpath for r in s1.train} == ds.partitions[1][0]
    assert {r.relpath for r in s3.train} == ds.partitions[0][0]  # 3 partitions: seed 3 -> partition 1
    assert "partition 1 of 3" in s0.notes[0]
    fixed = make_protocol("sun397-partitions", partition=2)
    assert fixed.deterministic and {r.relpath for r in fixed.split(ds, 0).test} == ds.partitions[1][1]


def test_sun397_without_partitions_falls_back_with_a_note_or_errors():
    s = make_protocol("sun397-partitions").split(_sun(False), 0)
    assert per_class(s.train) == {"abbey": 50, "bakery/shop": 50}
    assert per_class(s.test) == {"abbey": 50, "bakery/shop": 50}
    assert any("not the official partitions" in n for n in s.notes)
    with pytest.raises(FeatbenchError, match="no partition files"):
        make_protocol("sun397-partitions", fallback="error").split(_sun(False), 0)


# -- domain shifts --------------------------------------------------------------------------------------

OFFICE = {"amazon": {"mug": 90, "bike": 80}, "dslr": {"mug": 8, "bike": 21}, "webcam": {"mug": 27, "bike": 21}}


def test_saenko_counts():
    assert saenko_source_count("amazon") == 20 and saenko_source_count("caltech10") == 20
    assert saenko_source_count("dslr") == 8 and saenko_source_count("webcam") == 8


def test_source_only_sampled():
    ds = dataset(OFFICE, name="office")
    proto = make_protocol("source-only-sampled")
    assert proto.needs_domains and proto.default_trials == 5
    s = proto.split(ds, 0, source="amazon", target="webcam")
    assert per_class(s.train) == {"mug": 20, "bike": 20} and {r.group for r in s.train} == {"amazon"}
    assert len(s.test) == 48 and {r.group for r in s.test} == {"webcam"} and not s.target_train
    s = proto.split(ds, 0, source="dslr", target="amazon")
    assert per_class(s.train) == {"mug": 8, "bike": 8}
    assert uids(proto.split(ds, 0, source="amazon", target="webcam").train) == \
        uids(proto.split(ds, 0, source="amazon", target="webcam").train)
    assert uids(proto.split(ds, 1, source="amazon", target="webcam").train) != \
        uids(proto.split(ds, 0, source="amazon", target="webcam").train)
    s = make_protocol("source-only-sampled", per_class="all").split(ds, 0, source="dslr", target="webcam")
    assert len(s.train) == 29


def test_source_plus_target():
    ds = dataset(OFFICE, name="office")
    proto = make_protocol("source+target")
    s = proto.split(ds, 0, source="amazon", target="dslr")
    assert per_class(s.train) == {"mug": 20, "bike": 20}
    assert per_class(s.target_train) == {"mug": 3, "bike": 3} and {r.group for r in s.target_train} == {"dslr"}
    assert per_class(s.test) == {"mug": 5, "bike": 18}  # the remaining target images
    assert not uids(s.target_train) & uids(s.test) and not uids(s.train) & uids(s.test)
    s2 = proto.split(ds, 1, source="amazon", target="dslr")
    assert uids(s2.target_train) != uids(s.target_train)
    s = make_protocol("source+target", source_per_class="all", target_per_class=1).split(
        ds, 0, source="webcam", target="dslr")
    assert len(s.train) == 48 and len(s.target_train) == 2


def test_source_only_full():
    ds = dataset(OFFICE, name="office")
    s = make_protocol("source-only-full").split(ds, 0, source="dslr", target="webcam")
    assert len(s.train) == 29 and len(s.test) == 48 and make_protocol("source-only-full").deterministic


# -- validation -------------------------------------------------------------------------------------------

def test_duplicates_across_train_and_test_are_dropped_or_kept_and_counted():
    train = [rec("a", "train", 0, uid="X"), rec("a", "train", 1, uid="Y"), rec("a", "train", 2, uid="Y")]
    test = [rec("a", "test", 0, uid="X"), rec("a", "test", 1, uid="Z"), rec("a", "test", 2, uid="Z")]
    s = validate_split(Split(train=list(train), test=list(test)))
    assert [r.uid for r in s.test] == ["Z", "Z"]
    assert s.stats == {"duplicates_dropped": 1, "duplicates_within_train": 1, "duplicates_within_test": 1}
    assert any("dropped from test: test/a/0000.jpg" in n for n in s.notes)
    s = validate_split(Split(train=list(train), test=list(test)), duplicates="keep")
    assert len(s.test) == 3 and s.stats["duplicates_kept"] == 1


def test_duplicate_of_a_labelled_target_image_leaves_test():
    s = validate_split(Split(train=[rec("a", "amazon", 0)], target_train=[rec("a", "webcam", 0, uid="T")],
                             test=[rec("a", "webcam", 1, uid="T"), rec("a", "webcam", 2)]))
    assert len(s.test) == 1 and s.stats["duplicates_dropped"] == 1


def test_conflicting_labels_are_noted():
    s = validate_split(Split(train=[rec("tallbuilding", "train", 0, uid="D"), rec("insidecity", "train", 1)],
                             test=[rec("insidecity", "test", 0, uid="D"), rec("insidecity", "test", 1)]))
    assert s.stats["duplicates_conflicting_labels"] == 1
    assert any("insidecity/tallbuilding" in n for n in s.notes)


def test_missing_classes_error_or_drop():
    split = lambda: Split(train=[rec("a", "train", 0)], test=[rec("a", "test", 0), rec("b", "test", 0)])  # noqa: E731
    with pytest.raises(FeatbenchError, match="in test but not in training: b"):
        validate_split(split())
    s = validate_split(split(), missing_classes="drop")
    assert per_class(s.test) == {"a": 1} and s.stats["missing_class_test_dropped"] == 1
    ds = dataset({"train": {"a": 2}, "test": {"a": 2, "b": 2}})
    with pytest.raises(FeatbenchError, match="not in training"):
        make_protocol("given").split(ds, 0)
    assert len(make_protocol("given", missing_classes="drop").split(ds, 0).test) == 2


def test_empty_sides_are_errors():
    with pytest.raises(FeatbenchError, match="no training images"):
        validate_split(Split(train=[], test=[rec("a", "test", 0)]))
    with pytest.raises(FeatbenchError, match="no test images"):
        validate_split(Split(train=[rec("a", "train", 0)], test=[]))


# -- tasks ---------------------------------------------------------------------------------------------------

def test_task_names_and_labels():
    assert parse_task_name("office_caltech10:amazon->webcam") == ("office_caltech10", "amazon", "webcam")
    assert parse_task_name("office_caltech10:amazon->webcam#st") == ("office_caltech10", "amazon", "webcam")
    assert parse_task_name("scene15#paper") == ("scene15", None, None)
    with pytest.raises(FeatbenchError):
        parse_task_name("office:amazon")


def test_default_protocols_by_name():
    given = {"train": {"a": 1}, "test": {"a": 1}}
    assert default_protocol(dataset(given, "caltech101_mini"), None)[0] == "given"
    assert default_protocol(dataset(given, "scene15_mini"), None)[0] == "given"
    assert default_protocol(dataset(given, "cub200_subset100"), None)[0] == "given"
    assert default_protocol(dataset({"all": {"a": 1}}, "101_ObjectCategories"), None)[0] == "caltech101-30"
    assert default_protocol(dataset({"all": {"a": 1}}, "tv_caltech101"), None)[0] == "caltech101-30"
    assert default_protocol(dataset({"all": {"a": 1}}, "stuff"), None)[0] == "per-class"
    assert default_protocol(dataset(OFFICE, "office_caltech10"), "amazon")[0] == "source-only-full"


def _distinct_pixels(name: str) -> np.ndarray:
    """A 4x4 RGB image unique to ``name`` (files must not be exact duplicates by accident: the split
    checks drop duplicated test images)."""
    return np.frombuffer(hashlib.sha256(name.encode()).digest() * 2, np.uint8)[:48].reshape(4, 4, 3).copy()


def _tree(root: Path, counts: dict[str, dict[str, int]]) -> None:
    for g, per in counts.items():
        for c, n in per.items():
            (root / g / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(_distinct_pixels(f'{g}/{c}/{i}')).save(root / g / c / f"{i}.png")


def test_resolve_task_on_a_domain_tree(tmp_path):
    _tree(tmp_path / "office_toy", {"amazon": {"mug": 25, "bike": 22}, "webcam": {"mug": 9, "bike": 10}})
    task = resolve_task("office_toy:amazon->webcam#st", [str(tmp_path)], protocol="source+target")
    assert task.trials == 5 and task.family == "domain" and task.name.endswith("#st")
    s0, s0b, s1 = task.split(0, 0), task.split(0, 0), task.split(1, 0)
    assert len(s0.train) == 40 and len(s0.target_train) == 6
    assert [r.uid for r in s0.target_train] == [r.uid for r in s0b.target_train]
    assert uids(s0.target_train) != uids(s1.target_train)
    assert resolve_task("office_toy:amazon->webcam", [str(tmp_path)]).protocol.name == "source-only-full"
    with pytest.raises(FeatbenchError, match="same domain"):
        resolve_task("office_toy:amazon->amazon", [str(tmp_path)])
    with pytest.raises(FeatbenchError, match="needs DATASET:SOURCE->TARGET"):
        _tree(tmp_path / "plain", {"train": {"a": 2}, "test": {"a": 2}})
        resolve_task("plain", [str(tmp_path)], protocol="source+target")


# -- real data -------------------------------------------------------------------------------------------------

needs_shared = pytest.mark.skipif(not (SHARED / "datasets").is_dir(),
                                  reason=f"real-data check: {SHARED / 'datasets'} is absent")
needs_staged = pytest.mark.skipif(not all((STAGED / n / "MANIFEST.tsv").is_file() for n in ("caltech101", "scene15")),
                                  reason=f"real-data check: staged caltech101 and scene15 absent at {STAGED}")


@pytest.mark.shared
@needs_shared
@pytest.mark.parametrize("protocol", ["source-only-full", "source-only-sampled", "source+target"])
def test_office_caltech10_every_shift(protocol):
    domains = ["amazon", "caltech10", "dslr", "webcam"]
    roots = [str(SHARED / "datasets")]
    sizes = {"amazon": 958, "caltech10": 1123, "dslr": 157, "webcam": 295}
    for s in domains:
        for t in domains:
            if s == t:
                continue
            task = resolve_task(f"office_caltech10:{s}->{t}", roots, protocol=protocol)
            split = task.split(0, 0)
            assert not uids(split.train + split.target_train) & uids(split.test)
            assert len(per_class(split.train)) == 10
            if protocol == "source-only-full":
                assert len(split.train) == sizes[s] and len(split.test) == sizes[t]
            else:
                assert len(split.train) == 10 * (8 if s in ("dslr", "webcam") else 20)
            if protocol == "source+target":
                assert len(split.target_train) == 30
                dropped = split.stats.get("duplicates_dropped", 0)
                assert len(split.test) + dropped == sizes[t] - 30


@pytest.mark.shared
@needs_shared
def test_shared_minis_keep_their_given_split_and_scene_duplicates_are_dropped():
    roots = [str(SHARED / "datasets")]
    for name in ("caltech101_mini", "cub200_mini", "scene15_mini"):
        task = resolve_task(name, roots)
        assert task.protocol.name == "given" and task.trials == 1
        split = task.split(0, 0)
        assert not uids(split.train) & uids(split.test)
    split = resolve_task("scene15_mini", roots).split(0, 0)
    assert split.stats.get("duplicates_dropped", 0) >= 1 and len(split.test) == 150 - split.stats["duplicates_dropped"]


@pytest.mark.shared
@needs_staged
def test_staged_caltech101_and_scene15_protocols():
    roots = [str(STAGED)]
    # the staged copy has its source's train/test folders (a course's lists): without a protocol
    # named that split is used, as for any folder; the decaf suites name caltech101-30
    assert resolve_task("caltech101", roots).protocol.name == "given"
    task = resolve_task("caltech101", roots, protocol="caltech101-30")
    assert task.protocol.name == "caltech101-30" and task.trials == 5
    s0, s1 = task.split(0, 0), task.split(1, 0)
    assert len(s0.train) == 3030 and len(per_class(s0.train)) == 101
    assert "BACKGROUND_Google" not in per_class(s0.train) | per_class(s0.test)
    assert max(per_class(s0.test).values()) == 50 and min(per_class(s0.test).values()) >= 1
    assert not uids(s0.train) & uids(s0.test) and uids(s0.train) != uids(s1.train)
    task = resolve_task("scene15", roots, protocol="scene15-100")
    assert task.protocol.name == "scene15-100"
    s = task.split(0, 0)
    assert len(s.train) == 1500
    # 18 exact-duplicate pairs: each is inside train, inside test, or straddles (dropped from test)
    st = s.stats
    assert st.get("duplicates_dropped", 0) + st.get("duplicates_within_train", 0) + st.get("duplicates_within_test", 0) == 18
    assert len(s.test) == 4485 - 1500 - st.get("duplicates_dropped", 0)


def test_a_folder_named_like_sun397_keeps_its_own_split(tmp_path):
    """A name is no reason to ignore a user's split: own train/test wins unless a protocol is asked for."""
    _tree(tmp_path / "sun397_mine", {"train": {"beach": 6, "forest": 5}, "test": {"beach": 2, "forest": 3}})
    task = resolve_task("sun397_mine", [str(tmp_path)])
    assert task.protocol.name == "given" and "own train/test split" in task.protocol_source
    assert task.dataset.info.family == "scene" and task.dataset.info.headline_metric == "mean_class_acc"
    split = task.split(0, 0)
    assert (len(split.train), len(split.test)) == (11, 5)
    asked = resolve_task("sun397_mine", [str(tmp_path)], protocol="per-class", protocol_options={"train": 2})
    assert asked.protocol.name == "per-class" and asked.protocol_source == "named by the suite"
