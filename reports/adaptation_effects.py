"""What each domain-adaptation method does to accuracy, measured against no adaptation.

For every domain-shift task with a ``none`` row, each other method's row of the same extractor,
layer, classifier and protocol gives a paired difference (same splits, same trials). Averaged
over the shifts of a protocol this says, from the measurements alone, when a method helps and
when it hurts, and how that depends on the classifier (``1nn`` vs ``logreg``), the protocol
(sampled vs whole source) and the method's options (SA's ``d``, ``zscore``).

Verdict per row: **helps** when the mean difference is above +1 point and no shift loses more
than 1 point, **hurts** when the mean is below -1 point and no shift gains more than 1 point,
**mixed** when shifts disagree by more than that, **no effect** otherwise.
"""
from __future__ import annotations

import re

import pandas as pd

from .section_api import ReportContext, Section, register_section
from .tables import esc, html_table, is_domain_task, md_table

KEYS = ["extractor", "extractor_config", "layer", "classifier", "protocol", "dataset_id"]
MARGIN = 1.0  # points


def _method_order(method: str) -> tuple:
    name, _, opts = method.partition(":")
    d = re.search(r"\bd=(\d+)", opts)
    return (name != "none", name, "zscore=false" in opts, int(d.group(1)) if d else 0, opts)


def effects(agg: pd.DataFrame) -> pd.DataFrame:
    """One row per (extractor, layer, classifier, protocol, method): accuracy and paired Δ vs 'none' over shifts."""
    dom = agg[agg["task"].map(is_domain_task)]
    cols = [*KEYS, "method", "n_shifts", "acc", "delta", "delta_min", "delta_max", "verdict"]
    if dom.empty or not (dom["method"] == "none").any():
        return pd.DataFrame(columns=cols)
    base = dom[dom["method"] == "none"].drop_duplicates([*KEYS, "task"]).set_index([*KEYS, "task"])["top1_mean"]
    rows = []
    for key, sub in dom.groupby([*KEYS, "method"], sort=False):
        diffs, accs = [], []
        for r in sub.itertuples(index=False):
            b = base.get((*key[:-1], r.task))
            if b is None:
                continue
            accs.append(100 * r.top1_mean)
            diffs.append(100 * (r.top1_mean - b))
        if not diffs:
            continue
        mean = sum(diffs) / len(diffs)
        lo, hi = min(diffs), max(diffs)
        if key[-1] == "none":
            verdict = ""
        elif mean > MARGIN and lo >= -MARGIN:
            verdict = "helps"
        elif mean < -MARGIN and hi <= MARGIN:
            verdict = "hurts"
        elif lo < -MARGIN and hi > MARGIN:
            verdict = "mixed"
        else:
            verdict = "no effect"
        rows.append(dict(zip([*KEYS, "method"], key), n_shifts=len(diffs), acc=sum(accs) / len(accs), delta=mean,
                         delta_min=lo, delta_max=hi, verdict=verdict))
    out = pd.DataFrame(rows, columns=cols)
    if out.empty:
        return out
    out["_m"] = out["method"].map(_method_order)
    out = out.sort_values([*KEYS, "_m"], kind="stable").drop(columns="_m")
    # a table of 'none' rows alone says nothing
    has_other = out.groupby(KEYS)["method"].transform(lambda m: (m != "none").any())
    return out[has_other].reset_index(drop=True)


def table(eff: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    header = ["extractor", "classifier", "protocol", "method", "shifts", "top-1 (%)", "Δ vs none", "Δ range", "verdict"]
    rows = []
    for r in eff.itertuples(index=False):
        ex = r.extractor + (f"@{r.layer}" if r.layer else "")
        none = r.method == "none"
        rows.append([ex, r.classifier, r.protocol, r.method, str(r.n_shifts), f"{r.acc:.1f}",
                     "—" if none else f"{r.delta:+.1f}", "—" if none else f"{r.delta_min:+.1f} … {r.delta_max:+.1f}",
                     r.verdict or "—"])
    return header, rows


INTRO = ("Paired differences against no adaptation (same splits and trials), top-1 points, mean over the shifts "
         f"of each protocol. Verdict: helps (mean > +{MARGIN:g} and no shift below -{MARGIN:g}), hurts (mean < "
         f"-{MARGIN:g} and no shift above +{MARGIN:g}), mixed (shifts on both sides), otherwise no effect.")


def markdown(agg: pd.DataFrame) -> str:
    eff = effects(agg)
    if eff.empty:
        return ""
    header, rows = table(eff)
    return INTRO + "\n\n" + md_table(header, rows, ["l", "l", "l", "l", "r", "r", "r", "r", "l"])


@register_section("adaptation-effects", order=53)
def adaptation_effects_section(ctx: ReportContext) -> Section | None:
    """When each domain-adaptation method helps or hurts: paired differences against no adaptation."""
    eff = effects(ctx.agg)
    if eff.empty:
        return None
    header, rows = table(eff)
    return Section("adaptation-effects", "When adaptation helps or hurts", f"<p>{esc(INTRO)}</p>" + html_table(header, rows),
                   markdown(ctx.agg))
