"""Accuracy tables: metric convention, comparability, aggregation over trials, formatting.

Conventions (also printed in every report's "How to read" section):

* **Metric.** Each task has one *headline* metric, following the convention of the literature
  for its dataset: mean per-class accuracy for Caltech-101/256 and 15-Scene (and SUN-397,
  MIT-67, whose test sets are balanced, so it equals top-1 there), top-1 accuracy for
  everything else (Office, CUB, built-in tasks). Both metrics are in ``accuracy.csv``.
* **Mean ± std** over trials (sample standard deviation, n-1; 0 for a single trial). When the
  same trial of the same configuration appears in several runs (a CPU and a GPU run), the
  runs' values are first averaged, so the std stays a spread over splits, not over machines.
* **Comparability.** Records are ranked against each other only inside a *comparable
  group*: same task name, same protocol string (split sizes and options included) and same
  ``dataset_id`` (content hash of the image list), and one classifier kind: linear probes
  (logreg, svm) are never ranked against ``1nn`` rows. For each task the group with the most
  records is the one shown in the main tables; the others are listed apart with the reason.
* **Variant.** A row of the tables: extractor spec, its config hash, the weights, the layer,
  the domain-adaptation method and the classifier.
"""
from __future__ import annotations

import html
import math
import re
from typing import Any, Iterable

import numpy as np
import pandas as pd

from featbench.datasets.info import dataset_info, parse_task_name
from featbench.errors import FeatbenchError

GROUP_KEYS = ["task", "protocol", "dataset_id", "classifier_kind"]
#: classifiers that are not linear probes, and their kind: their rows are ranked apart (a comparable
#: group of their own), never against logreg/svm rows of the same task
NON_LINEAR_CLASSIFIERS = {"1nn": "nearest-neighbour"}


def with_classifier_kind(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with a ``classifier_kind`` column ('linear' or e.g. 'nearest-neighbour') when it lacks one."""
    if "classifier_kind" in df.columns:
        return df
    df = df.copy()
    df["classifier_kind"] = [NON_LINEAR_CLASSIFIERS.get(str(c), "linear") for c in df["classifier"]] \
        if "classifier" in df.columns else "linear"
    return df


VARIANT_KEYS = ["extractor", "extractor_config", "weights", "layer", "method", "classifier"]
FAMILY_ORDER = ["object", "fine-grained", "scene", "domain"]
METRIC_NAMES = {"top1": "top-1 accuracy", "mean_class_acc": "mean per-class accuracy"}
METRIC_SHORT = {"top1": "top-1", "mean_class_acc": "mean-class"}

#: dataset facts a record carries since they were added to it (featbench.records.ResultRecord); older
#: records get them from featbench.datasets.info, by dataset name
DATASET_INFO_COLUMNS = ("headline_metric", "anchors_key")


def with_dataset_info(df: pd.DataFrame) -> pd.DataFrame:
    """Fill ``headline_metric`` and ``anchors_key`` where a record lacks them (records older than them)."""
    df = df.copy()
    for col in DATASET_INFO_COLUMNS:
        have = df[col] if col in df.columns else pd.Series("", index=df.index, dtype=object)
        have = have.map(lambda v: "" if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)) else str(v))
        looked_up = df["dataset"].map(lambda d: getattr(dataset_info(str(d)), col))
        df[col] = have.where(have != "", looked_up).astype(object)
    return df


def parse_domain_task(task: str) -> tuple[str, str, str] | None:
    """``office:amazon->webcam#st`` -> ``("office", "amazon", "webcam")``; None for a task that is not a
    domain shift. The runner's own parser (``#LABEL`` only names the task)."""
    try:
        dataset, source, target = parse_task_name(str(task))
    except FeatbenchError:
        return None
    return (dataset, source, target) if source else None


def is_domain_task(task: str) -> bool:
    return parse_domain_task(task) is not None


# -- comparability ------------------------------------------------------------------------------

def comparable_groups(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (task, protocol, dataset_id) with ``primary`` and, for the others, ``why_apart``."""
    if df.empty:
        return pd.DataFrame(columns=[*GROUP_KEYS, "n_records", "last_run", "primary", "why_apart", "group"])
    df = with_classifier_kind(df)
    g = df.groupby(GROUP_KEYS, sort=False).agg(n_records=("top1", "size"), last_run=("_run", "max")).reset_index()
    g["_apart"] = g["classifier_kind"].ne("linear")  # linear probes are the primary group when present
    g = g.sort_values(["task", "_apart", "n_records", "last_run"], ascending=[True, True, False, False],
                      kind="stable").drop(columns="_apart")
    g["primary"] = ~g.duplicated("task")
    reasons = []
    primary = g[g["primary"]].set_index("task")
    for _, row in g.iterrows():
        if row["primary"]:
            reasons.append("")
            continue
        p = primary.loc[row["task"]]
        why = []
        if row["protocol"] != p["protocol"]:
            why.append(f"protocol '{row['protocol']}' differs from '{p['protocol']}'")
        if row["dataset_id"] != p["dataset_id"]:
            why.append(f"dataset_id {row['dataset_id'] or '(none)'} differs from {p['dataset_id'] or '(none)'}: "
                       "the dataset's image list or contents are not the same")
        if row["classifier_kind"] != p["classifier_kind"]:
            why.append(f"classifier kind '{row['classifier_kind']}' is not ranked with '{p['classifier_kind']}' rows")
        reasons.append("; ".join(why))
    g["why_apart"] = reasons
    g["group"] = [f"{t} [{p}; {d}{'' if k == 'linear' else '; ' + k}]"
                  for t, p, d, k in zip(g["task"], g["protocol"], g["dataset_id"], g["classifier_kind"])]
    return g.reset_index(drop=True)


def mark_primary(df: pd.DataFrame, groups: pd.DataFrame) -> pd.DataFrame:
    df = with_classifier_kind(df)
    key = groups.set_index(GROUP_KEYS)["primary"]
    idx = pd.MultiIndex.from_frame(df[GROUP_KEYS])
    out = df.copy()
    out["primary"] = key.reindex(idx).to_numpy(dtype=bool) if len(df) else []
    return out


# -- variants and labels ---------------------------------------------------------------------------

def strip_layers(spec: str) -> str:
    """``cnn:m@a+b:opt=1`` -> ``cnn:m:opt=1`` (the row's own layer is shown instead)."""
    return re.sub(r"@[^:]*", "", str(spec))


def variant_labels(df: pd.DataFrame) -> dict[tuple, str]:
    """Short, unique labels for every variant in ``df`` (only the parts that vary are shown)."""
    variants = df[VARIANT_KEYS].drop_duplicates()
    many_classifiers = df["classifier"].nunique() > 1
    labels: dict[tuple, str] = {}
    for row in variants.itertuples(index=False):
        r = row._asdict()
        text = strip_layers(r["extractor"]) + (f"@{r['layer']}" if r["layer"] else "")
        if r["method"] and r["method"] != "none":
            text += f" +{r['method']}"
        if many_classifiers:
            text += f" [{r['classifier']}]"
        labels[tuple(r[k] for k in VARIANT_KEYS)] = text
    # the same label for different configs or weights: add what tells them apart
    by_label: dict[str, list[tuple]] = {}
    for key, text in labels.items():
        by_label.setdefault(text, []).append(key)
    for text, keys in by_label.items():
        if len(keys) < 2:
            continue
        for key in keys:
            r = dict(zip(VARIANT_KEYS, key))
            extra = []
            if len({dict(zip(VARIANT_KEYS, k))["extractor_config"] for k in keys}) > 1:
                extra.append(f"cfg {r['extractor_config'][:8]}")
            if len({dict(zip(VARIANT_KEYS, k))["weights"] for k in keys}) > 1:
                extra.append(f"weights {r['weights'] or 'none'}")
            labels[key] = f"{text} ({', '.join(extra)})" if extra else text
    return labels


def layer_orders(df: pd.DataFrame) -> dict[str, list[str]]:
    """Per extractor spec, its layers in network order: the order they first appear in the results."""
    out: dict[str, list[str]] = {}
    for ex, layer in zip(df["extractor"], df["layer"]):
        lst = out.setdefault(ex, [])
        if layer not in lst:
            lst.append(layer)
    return out


# -- aggregation -------------------------------------------------------------------------------------

def _sample_std(values: pd.Series) -> float:
    v = values.dropna()
    return float(v.std(ddof=1)) if len(v) > 1 else 0.0


def aggregate(df: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over trials for every comparable group × variant, ranked inside each group.

    Columns: GROUP_KEYS, VARIANT_KEYS, family, dataset, extractor_family, metric (the headline
    metric's column name), acc_mean/acc_std (headline, as fractions), top1_mean/std,
    mean_class_acc_mean/std, n_trials, n_runs, runs, devices, dim, label, rank, is_best, primary.
    """
    cols = [*GROUP_KEYS, *VARIANT_KEYS, "family", "dataset", "anchors_key", "extractor_family", "metric", "acc_mean", "acc_std",
            "top1_mean", "top1_std", "mean_class_acc_mean", "mean_class_acc_std", "n_trials", "n_runs", "runs",
            "devices", "dim", "label", "rank", "is_best", "primary", "order"]
    if df.empty:
        return pd.DataFrame({c: pd.Series(dtype=bool if c in ("primary", "is_best") else
                                          float if c.endswith(("_mean", "_std")) else object) for c in cols})
    df = with_classifier_kind(df.copy())
    if "_order" not in df.columns:
        df["_order"] = np.arange(len(df))
    if "_run" not in df.columns:
        df["_run"] = 0
    keys = GROUP_KEYS + VARIANT_KEYS
    # plain Python over the records: pandas groupby with Python callbacks is slow for many small groups
    trials: dict[tuple, dict[int, dict[str, Any]]] = {}
    if "headline_metric" not in df.columns:
        df = with_dataset_info(df)
    cols_needed = [*keys, "trial", "top1", "mean_class_acc", "_run", "device", "family", "dataset",
                   "extractor_family", "dim", "_order", "headline_metric", "anchors_key"]
    for rec in df[cols_needed].itertuples(index=False, name=None):
        r = dict(zip(cols_needed, rec))
        k = tuple(r[c] for c in keys)
        per = trials.setdefault(k, {})
        t = per.setdefault(int(r["trial"]), {"top1": [], "mca": [], "runs": set(), "devices": set(), "first": r})
        t["top1"].append(r["top1"])
        t["mca"].append(r["mean_class_acc"])
        t["runs"].add(int(r["_run"]))
        t["devices"].add(str(r["device"]))
    rows = []
    for k, per in trials.items():
        first = min((t["first"] for t in per.values()), key=lambda r: r["_order"])
        top1 = pd.Series([np.nanmean(t["top1"]) if np.isfinite(t["top1"]).any() else np.nan for t in per.values()],
                         dtype=float)
        mca = pd.Series([np.nanmean(t["mca"]) if np.isfinite(t["mca"]).any() else np.nan for t in per.values()],
                        dtype=float)
        rec = dict(zip(keys, k))
        rec.update(family=first["family"], dataset=first["dataset"], anchors_key=first["anchors_key"], extractor_family=first["extractor_family"],
                   dim=first["dim"], top1_mean=float(top1.mean()), top1_std=_sample_std(top1),
                   mean_class_acc_mean=float(mca.mean()), mean_class_acc_std=_sample_std(mca),
                   n_trials=len(per), runs=tuple(sorted(set().union(*(t["runs"] for t in per.values())))),
                   devices=tuple(sorted(set().union(*(t["devices"] for t in per.values())))),
                   order=int(first["_order"]))
        rec["n_runs"] = len(rec["runs"])
        metric = first["headline_metric"]
        rec["metric"] = metric
        rec["acc_mean"], rec["acc_std"] = rec[f"{metric}_mean"], rec[f"{metric}_std"]
        rows.append(rec)
    agg = pd.DataFrame(rows)
    labels = variant_labels(agg)
    agg["label"] = [labels[tuple(r)] for r in agg[VARIANT_KEYS].itertuples(index=False)]
    agg["rank"] = agg.groupby(GROUP_KEYS)["acc_mean"].rank(ascending=False, method="min")
    best = agg.groupby(GROUP_KEYS)["acc_mean"].transform("max")
    agg["is_best"] = np.isclose(agg["acc_mean"], best, rtol=0, atol=1e-12) & agg["acc_mean"].notna()
    groups = comparable_groups(df)
    agg = mark_primary(agg, groups)
    return agg[cols]


def add_order(df: pd.DataFrame) -> pd.DataFrame:
    """Row order across the merged runs (run by run, then file order): drives 'order of appearance'."""
    df = df.copy()
    df["_order"] = np.arange(len(df))
    return df


def task_order(agg: pd.DataFrame) -> list[str]:
    """Tasks (primary groups) sorted by family (object, fine-grained, scene, domain, others), then appearance."""
    prim = agg[agg["primary"]]
    first = prim.groupby("task")["order"].min()
    fam = prim.groupby("task")["family"].first()

    def key(t):
        f = fam[t]
        return (FAMILY_ORDER.index(f) if f in FAMILY_ORDER else len(FAMILY_ORDER), f, first[t])

    return sorted(first.index, key=key)


def variant_order(agg: pd.DataFrame) -> list[str]:
    """Labels: classical extractors first (order of appearance), CNNs after, layers in network order."""
    first = agg.groupby("label").agg(order=("order", "min"), fam=("extractor_family", "first"),
                                     ex=("extractor", "first"))
    ex_first = agg.groupby("extractor")["order"].min()
    first["ex_order"] = first["ex"].map(ex_first)
    first["is_cnn"] = first["fam"].eq("cnn")
    return list(first.sort_values(["is_cnn", "ex_order", "order"], kind="stable").index)


# -- formatting ------------------------------------------------------------------------------------------

def pct(x: float, digits: int = 1) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.{digits}f}"


def pm(mean: float, std: float, n: int | None = None) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    if n is not None and n <= 1:
        return pct(mean)
    return f"{pct(mean)} ± {pct(std)}"


def per_task_matrix(agg: pd.DataFrame) -> tuple[list[str], list[str], dict[tuple[str, str], pd.Series]]:
    """(variant labels, tasks, {(label, task): aggregated row}) over the primary groups."""
    prim = agg[agg["primary"]]
    if prim.empty:
        return [], [], {}
    tasks = task_order(agg)
    labels = variant_order(prim)
    cells = {(r["label"], r["task"]): r for _, r in prim.iterrows()}
    return labels, tasks, cells


def family_summary(agg: pd.DataFrame) -> pd.DataFrame:
    """Per variant and task family: mean over the family's tasks of the headline mean accuracy.

    Columns: label, family, acc (fraction), n_tasks, n_family_tasks, complete, is_best (best among
    the variants that have every task of the family).
    """
    prim = agg[agg["primary"]]
    if prim.empty:
        return pd.DataFrame(columns=["label", "family", "acc", "n_tasks", "n_family_tasks", "complete", "is_best"])
    fam_tasks = prim.groupby("family")["task"].nunique()
    s = prim.groupby(["label", "family"]).agg(acc=("acc_mean", "mean"), n_tasks=("task", "nunique")).reset_index()
    s["n_family_tasks"] = s["family"].map(fam_tasks)
    s["complete"] = s["n_tasks"] == s["n_family_tasks"]
    best = s[s["complete"]].groupby("family")["acc"].max()
    s["is_best"] = s["complete"] & np.isclose(s["acc"], s["family"].map(best).astype(float), rtol=0, atol=1e-12)
    return s


def families_in_order(families: Iterable[str]) -> list[str]:
    fams = list(dict.fromkeys(families))
    return sorted(fams, key=lambda f: (FAMILY_ORDER.index(f) if f in FAMILY_ORDER else len(FAMILY_ORDER), f))


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def md_escape(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def md_table(header: list[str], rows: list[list[str]], align: list[str] | None = None) -> str:
    """A GitHub-flavoured Markdown table (no tabulate needed)."""
    align = align or ["l"] + ["r"] * (len(header) - 1)
    sep = [":---" if a == "l" else "---:" if a == "r" else ":---:" for a in align]
    lines = ["| " + " | ".join(md_escape(h) for h in header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


_NUMERIC = re.compile(r"^\s*([-+]?\d[\d.,]*(e[-+]?\d+)?%?|—|-)?(\s*±\s*[\d.]+)?(\s*\(\d+/\d+\))?\s*$", re.I)


def is_numeric_text(text: Any) -> bool:
    plain = re.sub(r"<[^>]+>", "", str(text)).replace("*", "")
    return bool(plain.strip()) and bool(_NUMERIC.match(plain)) or plain.strip() in ("", "—")


def html_table(header: list[str], rows: list[list[str]], *, raw: bool = False, classes: str = "") -> str:
    """A simple HTML table in a horizontally scrolling wrapper; cells escaped unless ``raw``.

    Columns whose cells are all numbers (or '—') are right-aligned, the others left-aligned.
    """
    f = (lambda c: str(c)) if raw else esc
    ncol = len(header)
    numeric = [bool(rows) and all(is_numeric_text(r[j]) for r in rows if j < len(r)) for j in range(ncol)]
    cls = ["" if numeric[j] else " class='t'" for j in range(ncol)]
    head = "".join(f"<th{cls[j]}>{f(h)}</th>" for j, h in enumerate(header))
    body = "".join("<tr>" + "".join(f"<td{cls[j] if j < ncol else ''}>{f(c)}</td>" for j, c in enumerate(row))
                   + "</tr>" for row in rows)
    return (f"<div class='table-wrap'><table class='{classes}'><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table></div>")


def latex_escape(text: Any) -> str:
    repl = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
            "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
    out = "".join(repl.get(ch, ch) for ch in str(text))
    return out.replace("->", r"$\rightarrow$").replace("—", "--").replace("±", r"$\pm$")
