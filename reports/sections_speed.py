"""Report sections on speed: accuracy against images/s (Pareto front) and ``featbench speed``'s page."""
from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from . import figures as figs
from .section_api import ReportContext, Section, absent, register_section
from .speed_page import speed_section
from .tables import esc, html_table, md_table, pct


# ---------------------------------------------------------------------------------------------------------
# 70 speed vs accuracy
# ---------------------------------------------------------------------------------------------------------

def speed_table(ctx: ReportContext) -> pd.DataFrame:
    """Median images/s per (extractor, extractor_config, device kind, hardware), from the records and speed.json."""
    df = ctx.df
    rows = []
    for (ex, cfg, kind, run), g in df.groupby(["extractor", "extractor_config", "device_kind", "_run"], sort=False):
        v = g["img_per_s"].astype(float)
        v = v[np.isfinite(v) & (v > 0)]
        rows.append({"extractor": ex, "extractor_config": cfg, "device_kind": kind,
                     "hardware": ctx.runs.runs[run].hardware(kind), "img_per_s": float(v.median()) if len(v) else np.nan,
                     "n": int(len(v)), "source": "results"})
    for i, run in enumerate(ctx.runs.runs):  # speed.json from `featbench speed`: fills gaps (e.g. cached features)
        for rec in _speed_records(run.speed):
            kind = "gpu" if str(rec.get("device", "cpu")).lower().startswith(("cuda", "gpu", "mps")) else "cpu"
            rows.append({"extractor": rec.get("extractor", ""), "extractor_config": rec.get("extractor_config", ""),
                         "device_kind": kind, "hardware": rec.get("hardware") or run.hardware(kind),
                         "img_per_s": float(rec.get("img_per_s", np.nan)), "n": 1, "source": "speed.json"})
    t = pd.DataFrame(rows, columns=["extractor", "extractor_config", "device_kind", "hardware", "img_per_s", "n",
                                    "source"])
    t["img_per_s"] = pd.to_numeric(t["img_per_s"], errors="coerce").astype(float)
    return t


def _speed_records(speed: Any) -> list[dict[str, Any]]:
    """Records of a speed.json: a list of dicts, or {"records": [...]}, each with extractor, device, img_per_s."""
    if isinstance(speed, dict):
        speed = speed.get("records", [])
    return [r for r in speed or [] if isinstance(r, dict) and "extractor" in r and "img_per_s" in r]


@register_section("speed", order=70)
def speed(ctx: ReportContext) -> Section:
    """Accuracy against images/s with the Pareto front, CPU and GPU apart."""
    title = "Accuracy against speed (Pareto front)"
    if ctx.df.empty:
        return absent("speed", title, "No results.")
    st = speed_table(ctx)
    measured = st[np.isfinite(st["img_per_s"])]
    agg = ctx.agg
    base = agg[agg["primary"] & agg["method"].eq("none") & agg["classifier"].eq(ctx.primary_classifier)]
    unmeasured = sorted(set(base["extractor"]) - set(measured["extractor"]))
    html, md, panels, table_rows, commons = [], [], [], [], []
    for (kind, hw), sk in measured.groupby(["device_kind", "hardware"], sort=True):
        speeds = sk.groupby("extractor")["img_per_s"].median()
        exs = [e for e in speeds.index if e in set(base["extractor"])]
        if not exs:
            continue
        task_sets = {e: set(base[base["extractor"] == e]["task"]) for e in exs}
        counts = Counter(t for ts in task_sets.values() for t in ts)
        top = max(counts.values())
        common = {t for t, c in counts.items() if c == top}  # the tasks most extractors have
        pts = []
        for e in exs:
            complete = common <= task_sets[e]
            b = base[base["extractor"] == e]
            if complete:
                b = b[b["task"].isin(common)]
            per_label = b.groupby("label").agg(acc=("acc_mean", "mean"), fam=("extractor_family", "first"))
            lab = per_label["acc"].idxmax()
            pts.append({"label": lab, "extractor": e, "acc": per_label.loc[lab, "acc"], "img_per_s": speeds[e],
                        "is_cnn": per_label.loc[lab, "fam"] == "cnn", "complete": complete,
                        "over": (f"the {len(common)} common task(s)" if complete else
                                 f"its own {len(task_sets[e])} task(s) only: " + ", ".join(sorted(task_sets[e])))})
        pts = pd.DataFrame(pts)
        front = np.zeros(len(pts), dtype=bool)
        c = pts["complete"].to_numpy(bool)
        front[c] = figs.pareto_front(pts.loc[c, "img_per_s"].to_numpy(float), pts.loc[c, "acc"].to_numpy(float))
        pts["front"] = front
        common_text = ", ".join(sorted(common))
        panels.append((f"{kind.upper()}: {hw}", pts))
        commons.append(f"{kind.upper()} {hw}: {common_text}")
        for p in pts.sort_values("img_per_s", ascending=False).itertuples():
            table_rows.append([kind.upper(), hw, p.label, f"{p.img_per_s:.3g}", pct(p.acc), "yes" if p.front else "",
                               p.over])
    panels.sort(key=lambda p: (not p[0].startswith("CPU"), p[0]))
    note = ("x: feature-extraction throughput (images/s, median over the run's tasks; includes decoding and, for "
            "learned encodings, fitting). y: headline accuracy, method 'none', classifier "
            f"'{ctx.primary_classifier}'. A CNN is shown at its best layer (one forward pass yields all layers). "
            "CPU and GPU, and different machines, are separate panels: their speeds are not comparable. Accuracy is "
            "averaged over the tasks most extractors share (" + "; ".join(commons) + "); an extractor without all "
            "of them is drawn hollow at the mean of its own tasks and kept off the Pareto front.")
    if not panels:
        why = ("No speed was measured in these runs: every feature came from the cache (a cache hit records no "
               "throughput). Rerun with --no-cache, or run `featbench speed`, whose speed.json a report picks up.")
        return absent("speed", title, why)
    fig = ctx.figure(figs.speed_accuracy(panels, "headline accuracy (%)"), "speed-accuracy",
                     "Accuracy against extraction speed (log scale), Pareto front in red, CPU and GPU apart")
    header = ["device", "hardware", "extractor", "images/s", "accuracy (%)", "Pareto", "accuracy over"]
    html.append(f"<p>{esc(note)}</p>{fig.html}" + html_table(header, table_rows))
    md.append(note + "\n\n" + fig.md + "\n\n" + md_table(header, table_rows, ["l", "l", "l", "r", "r", "l", "l"]))
    if unmeasured:
        msg = ("No throughput for " + ", ".join(unmeasured) +
               ": their features came from the cache. Rerun with --no-cache or `featbench speed` for their speed.")
        html.append(f"<p class='absent'>{esc(msg)}</p>")
        md.append(f"_{msg}_")
    return Section("speed", title, "".join(html), "\n\n".join(md))


@register_section("speed-detail", order=75)
def speed_detail(ctx: ReportContext) -> Section | None:
    """The speed page of ``featbench speed`` (reports/speed_page.py) for a run folder holding speed.json."""
    runs = [r for r in ctx.runs.runs if r.speed]
    if not runs:
        return None  # no speed.json: section left out
    html, md = [], []
    for run in runs:
        sec = speed_section(run.speed, level=3)
        html.append(f"<h3>{esc(run.run_id)}</h3>{sec.html}")
        md.append(f"### {run.run_id}\n\n{sec.markdown}")
    return Section("speed-detail", "Speed measurements (featbench speed)", "".join(html), "\n\n".join(md))
