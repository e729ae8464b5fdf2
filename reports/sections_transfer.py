"""The transfer study in the report: learning curves and the decision map.

* **Learning curves** (records whose task is a ``TASK#n=N`` point, see
  :mod:`featbench.datasets.learning_curve`): the headline metric against training images per
  class, one line per extractor/layer/evaluation, mean ± sample std over trials.
* **Decision map**: for every task (and curve point) that has fine-tuning rows, the best of each
  way to transfer — classical features + linear classifier, CNN features + linear classifier,
  ``finetune-head``, ``finetune-all`` — with its accuracy and what it costs (:func:`record_costs`:
  extraction plus classifier seconds for the linear ways, training plus prediction seconds for
  fine-tuning; extraction at the speed recorded when the features were computed, so a task whose
  features came from the cache costs what computing them cost).
  Ways whose accuracy is within noise of the best (:func:`within_noise`) tie, and the cheapest of
  the tied ways is the one to pick: the map names it and the ways it tied with.
Only adaptation method ``none`` enters both (fine-tuning has no feature-space adaptation).
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .section_api import ReportContext, Section, register_section
from .tables import METRIC_NAMES, esc, html_table, md_table

FINETUNE = ("finetune-head", "finetune-all")
WAYS = ("classical + linear", "CNN features + linear", "finetune-head", "finetune-all")


def curve_sizes(df: pd.DataFrame) -> dict[str, int]:
    """task -> training images per class, for the records that are learning-curve points."""
    if "train_per_class" not in df.columns:
        return {}
    sizes = pd.to_numeric(df["train_per_class"], errors="coerce")
    points = df.assign(_n=sizes).dropna(subset=["_n"])
    return {str(t): int(n) for t, n in points.groupby("task")["_n"].first().items()}


def _way(row) -> str:
    base = str(row["classifier"]).partition(":")[0]  # finetune-head:bn=train is still fine-tuning the head
    if base in FINETUNE:
        return base
    return "CNN features + linear" if row["extractor_family"] == "cnn" else "classical + linear"


def _series_label(row) -> str:
    layer = f"@{row['layer']}" if row["layer"] and row["layer"] != "finetuned" else ""
    return f"{row['extractor']}{layer} {row['classifier']}"


def curve_table(agg: pd.DataFrame, sizes: dict[str, int]) -> pd.DataFrame:
    """Learning-curve points: base task (the name before ``#n=``), n, series label, mean, std, trials, metric."""
    rows = []
    for _, r in agg[agg["method"] == "none"].iterrows():
        n = sizes.get(str(r["task"]))
        if n is None:
            continue
        rows.append({"task": str(r["task"]).partition("#")[0], "n": n, "series": _series_label(r), "mean": r["acc_mean"],
                     "std": r["acc_std"], "trials": r["n_trials"], "metric": r["metric"]})
    return pd.DataFrame(rows, columns=["task", "n", "series", "mean", "std", "trials", "metric"])


def curve_figure(task: str, points: pd.DataFrame):
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for series, g in points.groupby("series", sort=True):
        g = g.sort_values("n")
        mean, std = g["mean"].to_numpy(float) * 100, np.nan_to_num(g["std"].to_numpy(float)) * 100
        ax.plot(g["n"], mean, marker="o", label=series)
        ax.fill_between(g["n"], np.clip(mean - std, 0, 100), np.clip(mean + std, 0, 100), alpha=0.15)
    ax.set_xscale("log")
    sizes = sorted(points["n"].unique())
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.minorticks_off()
    ax.set_xlabel("training images per class")
    ax.set_ylabel(f"{METRIC_NAMES.get(points['metric'].iloc[0], 'accuracy')} (%)")
    ax.set_title(f"{task}: learning curves (mean ± std over trials)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


@register_section("learning-curves", order=65)
def learning_curves(ctx: ReportContext) -> Section | None:
    """Accuracy against training images per class (learning-curve tasks), mean ± std over trials."""
    table = curve_table(ctx.agg, curve_sizes(ctx.df))
    if table.empty:
        return None
    html, md = ["<p>Accuracy against the number of training images per class (the task's protocol, "
                "its training split cut to n per class with the trial's seed; the test set is the same "
                "for every n). Shaded: ± one sample standard deviation over trials.</p>"], []
    for task, points in table.groupby("task", sort=False):
        fig = ctx.figure(curve_figure(task, points), f"learning-curve-{task}".replace(":", "_").replace(">", ""),
                         f"{task}: accuracy against training images per class")
        wide = points.pivot_table(index="series", columns="n", values="mean", aggfunc="first")
        header = ["extractor / evaluation"] + [f"n={n}" for n in wide.columns]
        body = [[s] + [f"{v * 100:.1f}" if pd.notna(v) else "–" for v in wide.loc[s]] for s in wide.index]
        html += [fig.html, html_table(header, body)]
        md += [f"### {task}", fig.md, md_table(header, body)]
    return Section("learning-curves", "Learning curves", html="".join(html), md="\n\n".join(md))


def standard_error(acc: float, std: float, n_trials: int, n_test: float) -> float:
    """Standard error of a mean accuracy: the spread over trials when there are several, else the
    binomial error of one test set, ``sqrt(p (1 - p) / n_test)`` (for mean per-class accuracy an
    approximation)."""
    if n_trials > 1 and pd.notna(std):
        return float(std) / np.sqrt(n_trials)
    if pd.notna(n_test) and n_test > 0:
        return float(np.sqrt(max(acc * (1 - acc), 0.0) / n_test))
    return np.nan


def within_noise(best: tuple[float, float], other: tuple[float, float]) -> bool:
    """Tie rule: ``(accuracy, standard error)`` pairs whose difference is at most 1.96 standard errors
    of a difference (``sqrt(se_a^2 + se_b^2)``), a two-sided test at about 5 %. Unpaired, hence
    conservative: both ways ran on the same splits. Without a standard error nothing ties."""
    (a, se_a), (b, se_b) = best, other
    margin = 1.96 * np.sqrt(se_a ** 2 + se_b ** 2)
    return bool(np.isfinite(margin) and a - b <= margin)


def fine_tuned(frame: pd.DataFrame) -> pd.Series:
    """Which rows are fine-tuning evaluations (``finetune-head:bn=train`` included)."""
    return frame["classifier"].astype(str).str.partition(":")[0].isin(FINETUNE)


def record_costs(df: pd.DataFrame) -> pd.Series:
    """Seconds one record's way to transfer costs. Linear ways: extracting the record's training and
    test images at its ``img_per_s`` (the speed measured when its features were computed, which
    the cache keeps: ``extract_s`` is 0 for features read back, and a learning curve's later sizes
    read the first size's) plus the classifier's ``fit_s``; ``extract_s`` where no speed is known.
    Fine-tuning: ``fit_s`` (training, the LP-FT probe inside it, and prediction); it reads pixels,
    not the extracted features."""
    def num(col: str) -> pd.Series:
        return pd.to_numeric(df[col], errors="coerce") if col in df.columns else pd.Series(np.nan, index=df.index)

    speed = num("img_per_s")
    extraction = ((num("n_train") + num("n_test")) / speed).where(speed > 0, num("extract_s"))
    return num("fit_s").fillna(0) + extraction.where(~fine_tuned(df), 0).fillna(0)


def decision_rows(ctx: ReportContext) -> list[dict]:
    """Per task with fine-tuning rows: the best variant of each way, its accuracy and cost."""
    agg = ctx.agg[ctx.agg["method"] == "none"].copy()
    if agg.empty:  # no records: str.partition of an empty column has no column 0
        return []
    tuned = fine_tuned(agg)
    if not tuned.any():
        return []
    df = ctx.df
    keys = ["task", "extractor", "layer", "classifier"]
    plain = df[df["method"] == "none"]
    cost = plain.assign(_cost=record_costs(plain)).groupby(keys)["_cost"].mean()
    n_test = plain.assign(_n=pd.to_numeric(plain["n_test"], errors="coerce")).groupby(keys)["_n"].mean()
    out = []
    for task, g in agg.groupby("task", sort=False):
        if not tuned[g.index].any():
            continue
        g = g.assign(way=[_way(r) for _, r in g.iterrows()])
        rec = {"task": task, "metric": g["metric"].iloc[0]}
        for way in WAYS:
            w = g[g["way"] == way]
            if w.empty or w["acc_mean"].isna().all():
                continue
            best = w.loc[w["acc_mean"].idxmax()]
            key = (task, best["extractor"], best["layer"], best["classifier"])
            spread = best["acc_std"] if int(best["n_trials"]) > 1 else np.nan  # one trial has no spread to show
            rec[way] = (best["acc_mean"], spread, _series_label(best), cost.get(key, np.nan))
            rec.setdefault("se", {})[way] = standard_error(best["acc_mean"], best["acc_std"], int(best["n_trials"]),
                                                          n_test.get(key, np.nan))
        present = [w for w in WAYS if w in rec]
        top = max(present, key=lambda w: rec[w][0]) if present else ""
        rec["tied"] = [w for w in present if within_noise((rec[top][0], rec["se"][top]), (rec[w][0], rec["se"][w]))]
        # the cheapest of the tied ways (unknown cost counts as the dearest); the most accurate on equal cost
        rec["winner"] = min(rec["tied"], key=lambda w: (np.nan_to_num(rec[w][3], nan=np.inf), -rec[w][0])) if present else ""
        out.append(rec)
    return out


def _verdict(rec: dict) -> str:
    others = [w for w in rec["tied"] if w != rec["winner"]]
    return rec["winner"] + (f" (cheapest; ties with {', '.join(others)})" if others else "")


@register_section("decision-map", order=67)
def decision_map(ctx: ReportContext) -> Section | None:
    """Per task and data size: the best of classical, CNN features, finetune-head, finetune-all, with cost."""
    rows = decision_rows(ctx)
    if not rows:
        return None
    header = ["task", *WAYS, "pick"]
    html_body, md_body = [], []
    for rec in rows:
        cells_h, cells_m = [esc(rec["task"])], [rec["task"]]
        for way in WAYS:
            if way not in rec:
                cells_h.append("–")
                cells_m.append("–")
                continue
            mean, std, label, secs = rec[way]
            acc = f"{mean * 100:.1f}" + (f" ± {std * 100:.1f}" if pd.notna(std) else "")
            cost = f"{secs:.0f} s" if pd.notna(secs) else "? s"
            text = f"{acc} ({cost})"
            bold = way == rec["winner"]
            cells_h.append(f"<b>{esc(text)}</b><br><small>{esc(label)}</small>" if bold
                           else f"{esc(text)}<br><small>{esc(label)}</small>")
            cells_m.append(f"**{text}**" if bold else text)
        cells_h.append(esc(_verdict(rec)))
        cells_m.append(_verdict(rec))
        html_body.append(cells_h)
        md_body.append(cells_m)
    intro = ("For each task (and learning-curve point): the best variant of each way to transfer, its headline "
             "accuracy (mean ± std over trials) and its cost in seconds per trial (extraction + classifier for the "
             "linear ways, extraction at the speed measured when the features were computed, cached or not; "
             "training + prediction for fine-tuning). Ways within "
             "noise of the most accurate one tie (difference at most 1.96 standard errors: over trials, or the "
             "binomial error of the test set for one trial); bold: the cheapest of the tied ways, the one to pick. "
             "Adaptation method 'none' only.")
    return Section("decision-map", "What should I do with my data? (decision map)",
                   html=f"<p>{esc(intro)}</p>" + html_table(header, html_body, raw=True),
                   md=intro + "\n\n" + md_table(header, md_body))
