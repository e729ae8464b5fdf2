"""Checks every protocol's split before features are extracted.

What is checked, and what happens (``Protocol`` options ``duplicates`` and ``missing_classes``):

* **Leakage through exact duplicates.** Two files with the same sha256 (``ImageRecord.uid``) are
  the same image, and the feature cache gives them the same feature vector. A test image whose
  copy is among the training images (``train`` or ``target_train``) is therefore a training
  image. Default ``duplicates="drop"``: it is removed from the test set, the count goes to
  ``Split.stats["duplicates_dropped"]`` and a note names a few. ``"keep"``: kept, counted in
  ``stats["duplicates_kept"]`` and noted (for comparing with published numbers that kept them).
  The shared data has such files: 15-Scene holds 18 exact-duplicate pairs (several straddle its
  given train/test folders, and any per-class draw can split a pair), Office-Caltech-10 holds 18
  groups inside domains (which matter for ``source+target``, which splits the target domain).
* **Duplicates inside one side** (two copies both in training, or both in test) are harmless for
  leakage; they are counted (``stats["duplicates_within_train"]``, ``..._within_test``) and noted.
  A duplicate carrying two different labels (15-Scene has one tallbuilding/insidecity pair) is
  noted as such.
* **Missing classes.** Test images of a class with no training image cannot be classified
  correctly; default ``missing_classes="error"`` refuses the split with the class names,
  ``"drop"`` removes those test images (``stats["missing_class_test_dropped"]``, noted).
  Classes with training but no test images are noted (``stats["classes_without_test"]``).
* **Small classes** are handled where images are drawn (:func:`sample_per_class`): a class with
  fewer images than asked gives all it has to training, which is noted; if that leaves it no test
  image, the note above says so too.
* An empty training or test set is an error.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import TYPE_CHECKING

from featbench.errors import FeatbenchError

if TYPE_CHECKING:
    from .folder import ImageRecord
    from .protocols import Split


def _examples(records: list["ImageRecord"], n: int = 3) -> str:
    names = sorted(r.relpath for r in records)
    return ", ".join(names[:n]) + (f" (+{len(names) - n} more)" if len(names) > n else "")


def duplicate_groups(records: list["ImageRecord"]) -> dict[str, list["ImageRecord"]]:
    """uid -> records, for every uid held by more than one record."""
    groups: dict[str, list["ImageRecord"]] = defaultdict(list)
    for r in records:
        groups[r.uid].append(r)
    return {uid: recs for uid, recs in groups.items() if len(recs) > 1}


def validate_split(split: "Split", what: str = "split", duplicates: str = "drop",
                   missing_classes: str = "error") -> "Split":
    """Check ``split`` in place (see the module docstring) and return it."""
    training = list(split.train) + list(split.target_train)
    if not training:
        raise FeatbenchError(f"{what}: no training images")
    if not split.test:
        raise FeatbenchError(f"{what}: no test images")
    stats, notes = split.stats, split.notes

    # the same image under two labels (before anything is dropped)
    labels_by_uid: dict[str, set[str]] = defaultdict(set)
    for r in training + split.test:
        labels_by_uid[r.uid].add(r.label)
    conflicting = {uid: labels for uid, labels in labels_by_uid.items() if len(labels) > 1}
    if conflicting:
        stats["duplicates_conflicting_labels"] = len(conflicting)
        pairs = sorted("/".join(sorted(v)) for v in conflicting.values())
        notes.append(f"duplicates: {len(conflicting)} image(s) carry two labels ({', '.join(pairs[:3])})")

    # exact duplicates between training and test
    train_uids = {r.uid for r in training}
    leaked = [r for r in split.test if r.uid in train_uids]
    if leaked:
        if duplicates == "drop":
            split.test = [r for r in split.test if r.uid not in train_uids]
            stats["duplicates_dropped"] = len(leaked)
            notes.append(f"duplicates: {len(leaked)} test image(s) identical (sha256) to a training image, "
                         f"dropped from test: {_examples(leaked)}")
        else:
            stats["duplicates_kept"] = len(leaked)
            notes.append(f"duplicates: {len(leaked)} test image(s) identical (sha256) to a training image, "
                         f"kept in test (duplicates=keep): {_examples(leaked)}")

    # duplicates inside one side
    for side, recs in (("train", training), ("test", split.test)):
        groups = duplicate_groups(recs)
        if groups:
            extra = sum(len(g) - 1 for g in groups.values())
            stats[f"duplicates_within_{side}"] = extra
            notes.append(f"duplicates: {len(groups)} group(s) of identical files inside {side} "
                         f"({extra} extra cop{'y' if extra == 1 else 'ies'}), kept")

    # classes
    train_classes = {r.label for r in training}
    test_counts = Counter(r.label for r in split.test)
    orphans = sorted(set(test_counts) - train_classes)
    if orphans:
        if missing_classes == "error":
            raise FeatbenchError(
                f"{what}: class(es) in test but not in training: {', '.join(orphans[:10])}"
                + (f" (+{len(orphans) - 10} more)" if len(orphans) > 10 else "")
                + " (protocol option missing_classes=\"drop\" drops their test images)")
        dropped = [r for r in split.test if r.label in set(orphans)]
        split.test = [r for r in split.test if r.label not in set(orphans)]
        stats["missing_class_test_dropped"] = len(dropped)
        notes.append(f"classes in test but not in training, {len(dropped)} test image(s) dropped: {', '.join(orphans)}")
        if not split.test:
            raise FeatbenchError(f"{what}: no test images left after dropping classes missing from training")
    no_test = sorted(train_classes - {r.label for r in split.test})
    if no_test:
        stats["classes_without_test"] = len(no_test)
        notes.append(f"{len(no_test)} class(es) with no test image: {', '.join(no_test[:10])}")
    return split
