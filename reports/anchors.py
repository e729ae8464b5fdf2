"""Published numbers shown beside a run's matching rows, with full references.

An anchor is data, not code: the datasets it applies to (their anchors keys, recorded with every
result from :class:`featbench.datasets.info.DatasetInfo`) and for a domain shift which one, the
task family, which kind of extractor it should sit next to (``cnn`` or ``classical``, optionally
narrowed by a regex on the extractor spec), the published value and metric, the reference, and
what differs between the published protocol and featbench's. A report shows each anchor that
applies to one of its tasks next to the run's best row of the matching kind; it is never ranked.

``checked`` says how far the number has been verified in this repository. The machine that
wrote this file has no network; the values were checked against copies of the papers' tables
that public repositories and later papers reproduce (November 2026), never against the PDFs
themselves. Each anchor says which. Re-read the original table before publishing a comparison.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import pandas as pd

REFERENCES: dict[str, str] = {
    "donahue2014": (
        "J. Donahue, Y. Jia, O. Vinyals, J. Hoffman, N. Zhang, E. Tzeng, T. Darrell. "
        "DeCAF: A Deep Convolutional Activation Feature for Generic Visual Recognition. "
        "Proceedings of the 31st International Conference on Machine Learning (ICML), PMLR 32(1):647-655, 2014. "
        "arXiv:1310.1531."),
    "lazebnik2006": (
        "S. Lazebnik, C. Schmid, J. Ponce. Beyond Bags of Features: Spatial Pyramid Matching for Recognizing "
        "Natural Scene Categories. IEEE Conference on Computer Vision and Pattern Recognition (CVPR), "
        "vol. 2, pp. 2169-2178, 2006."),
    "razavian2014": (
        "A. Sharif Razavian, H. Azizpour, J. Sullivan, S. Carlsson. CNN Features off-the-shelf: an Astounding "
        "Baseline for Recognition. IEEE Conference on Computer Vision and Pattern Recognition Workshops "
        "(CVPRW, DeepVision), pp. 806-813, 2014. arXiv:1403.6382."),
    "gong2012": (
        "B. Gong, Y. Shi, F. Sha, K. Grauman. Geodesic Flow Kernel for Unsupervised Domain Adaptation. "
        "IEEE Conference on Computer Vision and Pattern Recognition (CVPR), pp. 2066-2073, 2012."),
    "long2015": (
        "M. Long, J. Wang, J. Sun, P. S. Yu. Domain Invariant Transfer Kernel Learning. "
        "IEEE Transactions on Knowledge and Data Engineering 27(6):1519-1532, 2015."),
    "saenko2010": (
        "K. Saenko, B. Kulis, M. Fritz, T. Darrell. Adapting Visual Category Models to New Domains. "
        "European Conference on Computer Vision (ECCV), LNCS 6314, pp. 213-226, 2010."),
}

SHORT_CITES = {
    "donahue2014": "Donahue et al. 2014 (DeCAF)",
    "lazebnik2006": "Lazebnik et al. 2006",
    "razavian2014": "Razavian et al. 2014",
    "gong2012": "Gong et al. 2012 (GFK)",
    "long2015": "Long et al. 2015 (TKL)",
    "saenko2010": "Saenko et al. 2010",
}

UNCHECKED = "not yet checked against any copy of the paper's table"
_DECAF_COPIES = ("checked against two independent reproductions of the DeCAF tables (paper summaries in public "
                 "repositories) and later papers quoting them; not against the PDF")


@dataclasses.dataclass(frozen=True)
class Anchor:
    #: anchors keys of the datasets it applies to (DatasetInfo.anchors_key, recorded with each result)
    datasets: tuple[str, ...]
    family: str  # task family: object, fine-grained, scene, domain
    kind: str  # extractor family it sits next to: "cnn" or "classical"
    what: str  # the published method, e.g. "DeCAF6 + SVM"
    value: float  # percent
    metric: str  # "top1" or "mean_class_acc"
    reference: str  # key of REFERENCES
    protocol: str  # the published protocol, briefly
    differences: str  # what differs from featbench's task of the same name
    dataset: str = ""  # human name of the published dataset/task, e.g. "Caltech-101"
    extractor_pattern: str = ""  # optional regex on the extractor spec (e.g. '^surf')
    std: float | None = None
    checked: str = UNCHECKED
    #: for a domain shift, ``SOURCE->TARGET`` exactly as the task writes it (a ``#LABEL``ed task, run
    #: under another protocol, does not match); '' for a task that is not a shift
    shift: str = ""
    #: training images per class of the published protocol: a learning-curve point (``TASK#n=N``)
    #: matches only at that N; None: no curve point matches
    train_per_class: int | None = None

    def matches(self, task: str, anchors_key: str) -> bool:
        """Whether this anchor applies to ``task``, whose dataset has ``anchors_key``."""
        if anchors_key not in self.datasets:
            return False
        _, curve, n = str(task).partition("#n=")
        if curve and (self.train_per_class is None or n != str(self.train_per_class)):
            return False
        return not self.shift or str(task).partition(":")[2] == self.shift


def task_keys(agg: pd.DataFrame) -> dict[str, str]:
    """task -> its dataset's anchors key, from the aggregated records."""
    return dict(zip(agg["task"], agg["anchors_key"]))


ANCHORS: list[Anchor] = [
    Anchor(
        datasets=("caltech101",), dataset="Caltech-101", family="object", kind="cnn", train_per_class=30,
        what="DeCAF6 + SVM (with dropout)", value=86.91, std=0.7, metric="mean_class_acc", reference="donahue2014",
        protocol="Caltech-101, 30 training images per class, 5 random splits",
        differences="Published: the AlexNet-style DeCAF network with dropout on the feature and an SVM. featbench's "
                    "caltech101 task (protocol caltech101-30) has the same classes and split sizes, other networks and "
                    "logistic regression by default (the decaf suite runs the 5 trials, decaf-reduced 3); caltech101_mini is a "
                    "10-class subset with 15 train / 10 test per class: compare orderings, not numbers.",
        checked=_DECAF_COPIES + " (Figure 4 table: SVM + dropout, DeCAF6 86.91 ± 0.7, DeCAF7 85.51 ± 0.9)"),
    Anchor(
        datasets=("office31", "office-caltech10"), shift="amazon->webcam", dataset="Office-31 amazon→webcam", family="domain", kind="cnn",
        what="DeCAF6 + linear SVM, source only (S)", value=52.22, std=1.7, metric="top1", reference="donahue2014",
        protocol="Office-31 (Saenko et al. 2010 protocol): 20 source images per class from amazon, 31 classes, "
                 "5 random trials, no target labels",
        differences="Published on Office-31 (31 classes) with a sub-sampled source; featbench's office_caltech10 has "
                    "the 10 classes shared with Caltech-256 and trains on the whole source domain. Fewer classes make "
                    "the task easier: expect higher numbers. DeCAF's Table 1 with logistic regression (featbench's "
                    "default classifier) gives 48.58 ± 1.3 for DeCAF6 and 53.56 ± 1.5 for DeCAF7 (SVM: 53.90 ± 2.2).",
        checked=_DECAF_COPIES + " (Table 1, SVM (S) row)"),
    Anchor(
        datasets=("office31", "office-caltech10"), shift="amazon->webcam", dataset="Office-31 amazon→webcam", family="domain",
        kind="classical", extractor_pattern=r"^surf", what="SURF bag of words + linear SVM, source only (S)",
        value=11.05, std=2.3, metric="top1", reference="donahue2014",
        protocol="Office-31 (Saenko et al. 2010 protocol), 800-word SURF BoW, source only",
        differences="Published on Office-31 (31 classes, chance 3.2 %); featbench's office_caltech10 has 10 classes "
                    "(chance 10 %) and the whole amazon domain as source. With logistic regression DeCAF reports 9.63 ± 1.4.",
        checked=_DECAF_COPIES + " (Table 1, SVM (S) row)"),
    Anchor(
        datasets=("office-caltech10",), shift="amazon->webcam", dataset="Office-Caltech-10 amazon→webcam",
        family="domain", kind="classical", extractor_pattern=r"^surf",
        what="SURF-800 BoW (GFK's features), no adaptation, linear SVM", value=42.04, metric="top1",
        reference="long2015",
        protocol="Office-Caltech-10 with the SURF-800 features released with GFK (Gong et al. 2012), whole source "
                 "domain, linear SVM without adaptation (the 'NA'/'no' baseline of later DA papers)",
        differences="Same 10 classes, domains and 800-word SURF BoW as featbench's office_caltech10 with surf-bow:k=800, "
                    "but GFK's own keypoints and codebook and an SVM instead of logistic regression. Gong et al.'s "
                    "own tables use 1-nearest-neighbour (no adaptation: 29.83).",
        checked="checked against the SURF table of the jindongwang/transferlearning benchmark (data/benchmark.md: "
                "'no | SVM' row, A-W 42.04; 'no | 1NN' 29.83), which compiles it from Long et al.'s papers; the "
                "original TKL table was not re-read"),
    Anchor(
        datasets=("cub200",), dataset="CUB-200-2011", family="fine-grained", kind="cnn",
        what="DeCAF6, linear classifier", value=58.75, metric="top1", reference="donahue2014",
        protocol="CUB-200-2011, 200 species, standard train/test split, images cropped to the bounding box",
        differences="Published on all 200 species; featbench's cub200_subset100 is a 100-species copy (its given "
                    "split, no box crops) and cub200_mini a 10-species subset of it (15 train / 10 test per class): "
                    "fewer species make both easier. DeCAF's 58.75 uses logistic regression on "
                    "images cropped to 1.5x the box; with part-based DPD it reaches 64.96.",
        checked=_DECAF_COPIES),
    Anchor(
        datasets=("sun397",), dataset="SUN-397", family="scene", kind="cnn", train_per_class=50,
        what="DeCAF6, linear classifier", value=40.94, std=0.3, metric="mean_class_acc", reference="donahue2014",
        protocol="SUN-397, 50 train / 50 test per class, the splits of Xiao et al.",
        differences="Same protocol only when featbench runs SUN-397 with 50/50 per class; a subset is not comparable.",
        checked="value checked against two reproductions of DeCAF's Table 4 (LogReg 40.94 ± 0.3; SVM 39.36 ± 0.3); "
                "they disagree on whether it is the DeCAF6 or DeCAF7 column (the other is 40.84): re-read the paper"),
    Anchor(
        datasets=("scene15",), dataset="15-Scene", family="scene", kind="classical", train_per_class=100,
        extractor_pattern=r"spm|pyramid", what="SIFT spatial pyramid (M=200, L=2), kernel SVM", value=81.4, std=0.5,
        metric="mean_class_acc", reference="lazebnik2006",
        protocol="15-Scene, 100 train per class, rest test, 10 random splits",
        differences="Published with a histogram-intersection kernel SVM on dense SIFT (16x16 patches, 8 px grid); "
                    "featbench uses a linear classifier (sift-dense-bow-spm approximates the kernel with a chi2 map). "
                    "featbench's scene15 task (protocol scene15-100) has the published split sizes (the decaf suite "
                    "runs 5 trials, decaf-reduced 3); scene15_mini has 10 train / 10 test per class.",
        checked="NOT VERIFIED: no copy of Table 2 of the paper could be reached from this machine"),
    Anchor(
        datasets=("indoor67",), dataset="MIT Indoor-67", family="scene", kind="cnn", train_per_class=80,
        what="OverFeat CNN + linear SVM (no augmentation)", value=58.4, metric="mean_class_acc",
        reference="razavian2014", protocol="MIT Indoor-67, 80 train / 20 test per class (Quattoni & Torralba split)",
        differences="Published with OverFeat's first fully connected layer; 69.0 with augmentation (CNNaug-SVM).",
        checked="checked against a translation of the paper's Table 2 in a public repository (CNN-SVM 58.4, "
                "CNNaug-SVM 69.0); not against the PDF"),
]


def differences_note(anchor: Anchor, note: str = "") -> str:
    """What differs from featbench's task, the report's own note on the match, and how the value was checked."""
    return anchor.differences + (f" Note: {note}." if note else "") + f" [{anchor.checked}]"


def applicable(tasks: dict[str, str], anchors: list[Anchor] | None = None) -> list[tuple[Anchor, str]]:
    """(anchor, task) pairs for the anchors that apply to one of ``tasks`` (task -> anchors key)."""
    return [(a, t) for a in (ANCHORS if anchors is None else anchors) for t, key in tasks.items() if a.matches(t, key)]


def matching_row(agg: pd.DataFrame, anchor: Anchor, task: str) -> tuple[pd.Series | None, str]:
    """The run's best row (primary group, method 'none') of the anchor's kind on ``task``, and a note."""
    rows = agg[(agg["task"] == task) & agg["primary"] & (agg["method"] == "none")]
    kind = rows[rows["extractor_family"].eq("cnn")] if anchor.kind == "cnn" else \
        rows[~rows["extractor_family"].eq("cnn")]
    note = ""
    if anchor.extractor_pattern:
        narrowed = kind[kind["extractor"].str.contains(anchor.extractor_pattern, case=False, regex=True)]
        if narrowed.empty and not kind.empty:
            note = (f"no extractor matching '{anchor.extractor_pattern}' in this report; "
                    f"shown: the best {anchor.kind} extractor instead")
        else:
            kind = narrowed
    if kind.empty:
        return None, f"no {anchor.kind} extractor on {task} in this report"
    col = f"{anchor.metric}_mean"
    best = kind.loc[kind[col].astype(float).idxmax()]
    return best, note


def anchor_rows(agg: pd.DataFrame, anchors: list[Anchor] | None = None) -> list[dict[str, Any]]:
    """One dict per applicable (anchor, task): the run's value beside the published one."""
    keys = task_keys(agg)
    tasks = {t: keys[t] for t in dict.fromkeys(agg.loc[agg["primary"], "task"])}
    out = []
    for anchor, task in applicable(tasks, anchors):
        row, note = matching_row(agg, anchor, task)
        out.append({
            "anchor": anchor, "task": task,
            "run_label": None if row is None else row["label"],
            "run_value": None if row is None else float(row[f"{anchor.metric}_mean"]),
            "run_std": None if row is None else float(row[f"{anchor.metric}_std"]),
            "run_trials": None if row is None else int(row["n_trials"]),
            "note": note,
        })
    return out
