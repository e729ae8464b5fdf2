"""The speed section of a report: tables and figures from ``speed.json`` and the speed history.

:func:`speed_section` returns a :class:`SpeedSection` with an HTML fragment (one ``<section>``,
figures embedded as ``data:image/png;base64`` URIs, no external URL) and Markdown (tables;
figures only when ``markdown_images=True``, as the same data URIs). :func:`write_speed_page`
writes them as a standalone ``speed.html`` / ``speed.md``.

Content:

* the speed table: per extractor x device x batch size, end-to-end images/s and per-image
  latency (median, IQR), the runner-style, stage-pass and synthetic images/s and
  ``e2e_over_synthetic``;
* the stage breakdown: one stacked bar per extractor (largest batch size), each stage's share
  of the instrumented pass, with its total ms per image written at the bar's end;
* accuracy against speed with the Pareto front, when a results table (``results.csv`` of a
  ``featbench run``) is given: mean top-1 over tasks per extractor (and layer) against the
  end-to-end images/s measured by ``featbench speed``, matched on the extractor spec;
* the history: end-to-end images/s of each extractor across the recorded runs of the same
  machine (fingerprint), oldest first, labelled with their git commits.
"""
from __future__ import annotations

import base64
import dataclasses
import html as _html
import io
import json
import math
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from .tables import md_table

STAGES = ("read", "decode", "preprocess", "transfer", "extract", "encode")
MODES_NOTE = ("e2e: one extractor call on all the image files (its own pipeline: a CNN's DataLoader workers, "
              "the classical extractors' threads); runner: one call per batch, as featbench run extracts; "
              "stages: a separate sequential pass per stage on ready inputs; synthetic: the model alone on a "
              "ready on-device batch. Latency is per image: median and interquartile range over the timed passes.")
STAGE_COLORS = {"read": "#8da0cb", "decode": "#66c2a5", "preprocess": "#a6d854", "transfer": "#ffd92f",
                "extract": "#fc8d62", "encode": "#e78ac3"}


@dataclasses.dataclass
class SpeedSection:
    html: str
    markdown: str
    #: name -> ``data:image/png;base64,...`` for every figure drawn
    figures: dict[str, str]


# ----------------------------------------------------------------------------- inputs

def load_speed(speed: Any) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Rows and metadata from a speed.json path, a folder holding one, a dict or a DataFrame."""
    if isinstance(speed, pd.DataFrame):
        return speed.copy(), {}
    if isinstance(speed, dict):
        doc = speed
    else:
        p = Path(speed)
        if p.is_dir():
            p = p / "speed.json"
        doc = json.loads(p.read_text())
    df = pd.DataFrame(doc.get("rows", []))
    for col in ("img_per_s", "latency_ms_p50", "latency_ms_iqr", "e2e_over_synthetic", "fit_s",
                *[f"{s}_ms" for s in STAGES]):
        if col in df:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    if "error" in df:
        df["error"] = df["error"].fillna("")
    return df, doc.get("meta", {})


def load_history(history: Any) -> list[dict[str, Any]]:
    """History records as given (``featbench speed`` reads the history file and passes them)."""
    return list(history or [])


def _load_results(results: Any) -> pd.DataFrame | None:
    if results is None:
        return None
    if isinstance(results, pd.DataFrame):
        return results
    p = Path(results)
    if p.is_dir():
        p = p / "results.csv"
    return pd.read_csv(p, keep_default_na=False, na_values=[""]) if p.is_file() else None


# ----------------------------------------------------------------------------- figures

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    _plt().close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _label(row: pd.Series, with_device: bool = True) -> str:
    parts = [str(row["extractor"])]
    if with_device:
        parts.append(f"{row['device']} bs{row['batch_size']}")
    return " | ".join(parts)


def stage_figure(df: pd.DataFrame) -> str | None:
    """Stacked 100 % bars: each stage's share of the instrumented pass, total ms/img annotated."""
    st = _ok(df)
    st = st[st["mode"] == "stage"]
    if st.empty:
        return None
    st = st.sort_values("batch_size").groupby(["extractor", "device"], as_index=False).last()
    st = st.sort_values("latency_ms_p50")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 0.42 * len(st) + 1.3))
    labels = [_label(r) for _, r in st.iterrows()]
    ms = st[[f"{s}_ms" for s in STAGES]].fillna(0.0).to_numpy()
    totals = ms.sum(axis=1)
    left = [0.0] * len(st)
    for j, stage in enumerate(STAGES):
        share = [100.0 * m / t if t > 0 else 0.0 for m, t in zip(ms[:, j], totals)]
        if not any(share):
            continue
        ax.barh(labels, share, left=left, color=STAGE_COLORS[stage], label=stage)
        left = [a + b for a, b in zip(left, share)]
    for i, t in enumerate(totals):
        ax.text(101, i, f"{t:.1f} ms/img", va="center", fontsize=8)
    ax.set_xlim(0, 125)
    ax.set_xlabel("share of the instrumented (sequential) pass, %")
    ax.legend(ncol=6, fontsize=8, loc="lower center", bbox_to_anchor=(0.45, 1.0), frameon=False)
    ax.tick_params(axis="y", labelsize=8)
    return _uri(fig)


def pareto_front(points: pd.DataFrame, x: str = "img_per_s", y: str = "top1") -> pd.DataFrame:
    """Points that no other point beats on both speed and accuracy, fastest first."""
    pts = points.dropna(subset=[x, y]).sort_values([x, y], ascending=[False, False])
    front, best = [], -math.inf
    for idx, row in pts.iterrows():
        if row[y] > best:
            front.append(idx)
            best = row[y]
    return pts.loc[front]


def accuracy_speed_points(df: pd.DataFrame, results: pd.DataFrame, metric: str = "top1") -> pd.DataFrame:
    """Mean accuracy per extractor (and layer) joined with its e2e images/s (CPU preferred,
    largest batch size); rows without a speed measurement are left out."""
    if results is None or results.empty or metric not in results or "extractor" not in results:
        return pd.DataFrame()
    e2e = _ok(df)
    e2e = e2e[e2e["mode"] == "e2e"]
    if e2e.empty:
        return pd.DataFrame()
    e2e = e2e.assign(_cpu=(e2e["device"] != "cpu").astype(int))
    speed = (e2e.sort_values(["_cpu", "batch_size"], ascending=[True, False])
             .groupby("extractor", as_index=False).first()[["extractor", "device", "img_per_s"]])
    keys = ["extractor"] + (["layer"] if "layer" in results else [])
    acc = results.groupby(keys, dropna=False)[metric].mean().reset_index()
    out = acc.merge(speed, on="extractor", how="inner")
    if "layer" in out:
        out["label"] = [e + (f"@{l}" if isinstance(l, str) and l else "") for e, l in zip(out["extractor"], out["layer"])]
    else:
        out["label"] = out["extractor"]
    return out.rename(columns={metric: "top1"})


def pareto_figure(points: pd.DataFrame) -> str | None:
    if points.empty:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    front = pareto_front(points)
    ax.scatter(points["img_per_s"], points["top1"], s=40, color="#777777", zorder=2)
    ax.step(front["img_per_s"], front["top1"], where="post", color="#d62728", lw=1.5, zorder=1,
            label="Pareto front")
    ax.scatter(front["img_per_s"], front["top1"], s=60, color="#d62728", zorder=3)
    for _, r in points.iterrows():
        ax.annotate(r["label"], (r["img_per_s"], r["top1"]), fontsize=7, xytext=(4, 2), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel(f"images / s, end to end ({points['device'].iloc[0]}, log scale)")
    ax.set_ylabel("top-1 accuracy (mean over tasks)")
    ax.legend(fontsize=8)
    return _uri(fig)


def history_frame(history: Sequence[dict[str, Any]], fingerprint: str | None = None) -> pd.DataFrame:
    """One row per (run, e2e row) of the history, this machine only when ``fingerprint`` is set."""
    rows = []
    for i, rec in enumerate(history):
        if fingerprint and rec.get("machine_fingerprint") != fingerprint:
            continue
        commit = str(rec.get("git_commit") or "?")
        short = commit[:8] + ("*" if commit.endswith("-dirty") else "")
        for r in rec.get("rows", []):
            if r.get("mode") != "e2e" or r.get("error") or r.get("img_per_s") is None:
                continue
            rows.append({"run": i, "time": rec.get("time"), "commit": short, "extractor": r.get("extractor"),
                         "device": r.get("device"), "batch_size": r.get("batch_size"),
                         "img_per_s": float(r["img_per_s"])})
    return pd.DataFrame(rows)


def history_figure(hist: pd.DataFrame) -> str | None:
    if hist.empty:
        return None
    plt = _plt()
    # one line per extractor x device at its largest batch size
    top = hist.groupby(["extractor", "device"])["batch_size"].transform("max")
    h = hist[hist["batch_size"] == top]
    runs = sorted(h["run"].unique())
    pos = {r: i for i, r in enumerate(runs)}
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for (ext, dev), g in h.groupby(["extractor", "device"]):
        g = g.sort_values("run")
        ax.plot([pos[r] for r in g["run"]], g["img_per_s"], marker="o", ms=3, lw=1.2,
                label=f"{ext} ({dev}, bs{int(g['batch_size'].iloc[0])})")
    ticks = h.drop_duplicates("run").sort_values("run")
    ax.set_xticks([pos[r] for r in ticks["run"]])
    ax.set_xticklabels(ticks["commit"], rotation=45, ha="right", fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("images / s, end to end (log scale)")
    ax.set_xlabel("speed runs on this machine, oldest first (git commit; * = uncommitted changes)")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return _uri(fig)


# ----------------------------------------------------------------------------- tables

def _ok(df: pd.DataFrame) -> pd.DataFrame:
    if "error" not in df:
        return df
    return df[df["error"].fillna("") == ""]


def speed_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per extractor x device x batch size: e2e, stage and synthetic images/s side by side."""
    ok = _ok(df)
    keys = ["extractor", "device", "batch_size"]
    if ok.empty:
        return pd.DataFrame(columns=keys)
    e2e = ok[ok["mode"] == "e2e"].set_index(keys)
    out = pd.DataFrame(index=e2e.index)
    out["img/s (e2e)"] = e2e["img_per_s"]
    out["ms/img p50"] = e2e["latency_ms_p50"]
    out["ms/img IQR"] = e2e["latency_ms_iqr"]
    for mode, col in (("runner", "img/s (runner)"), ("stage", "img/s (stages)"), ("synthetic", "img/s (synthetic)")):
        part = ok[ok["mode"] == mode].set_index(keys)
        if not part.empty:
            out[col] = part["img_per_s"]
    if "e2e_over_synthetic" in e2e and e2e["e2e_over_synthetic"].notna().any():
        out["e2e / synthetic"] = e2e["e2e_over_synthetic"]
    if "fit_s" in e2e and e2e["fit_s"].notna().any():
        out["fit s"] = e2e["fit_s"]
    return out.reset_index().sort_values(["device", "batch_size", "img/s (e2e)"], ascending=[True, True, False])


def stage_table(df: pd.DataFrame) -> pd.DataFrame:
    st = _ok(df)
    st = st[st["mode"] == "stage"]
    cols = ["extractor", "device", "batch_size"] + [f"{s}_ms" for s in STAGES] + ["stage_source"]
    return st[[c for c in cols if c in st]].sort_values(["device", "batch_size", "extractor"])


def _fmt_frame(df: pd.DataFrame) -> pd.DataFrame:
    def fmt(v: Any) -> Any:
        if isinstance(v, float):
            if math.isnan(v):
                return "–"
            return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
        return v
    return df.apply(lambda col: col.map(fmt))


def _markdown(df: pd.DataFrame) -> str:
    return md_table([str(c) for c in df.columns], [[str(v) for v in row] for row in df.itertuples(index=False)])


# ----------------------------------------------------------------------------- the section

def speed_section(speed: Any, history: Any = None, results: Any = None, *, level: int = 2,
                  markdown_images: bool = False) -> SpeedSection:
    """HTML fragment and Markdown for the speed of one ``featbench speed`` run.

    ``speed``: speed.json path, a folder holding it, its parsed dict, or a DataFrame of rows;
    ``history``: the speed-history records (only this machine's runs are drawn);
    ``results``: a results.csv path / run folder / DataFrame for the accuracy-speed plot.
    """
    df, meta = load_speed(speed)
    hist = history_frame(load_history(history), meta.get("machine_fingerprint"))
    res = _load_results(results)
    h, h2 = f"h{level}", f"h{level + 1}"
    mach = meta.get("machine") or {}
    th = meta.get("threads") or {}
    ds = meta.get("dataset") or {}
    settings = meta.get("settings") or {}
    about = (f"{ds.get('images', '?')} images of {ds.get('name', '?')}, "
             f"{settings.get('warmup', '?')} warm-up + {settings.get('repeats', '?')} timed passes; "
             f"{mach.get('cpu', '?')} ({mach.get('cpu_count', '?')} CPUs"
             + (f", GPU {', '.join(mach['gpus'])}" if mach.get("gpus") else "") + "); "
             f"torch threads {th.get('torch_threads', '?')}, OpenCV threads {th.get('cv2_threads', '?')}, "
             f"OMP_NUM_THREADS {th.get('OMP_NUM_THREADS', '?')}; commit {str(meta.get('git_commit') or '?')[:12]}; "
             f"machine fingerprint {meta.get('machine_fingerprint', '?')}")
    table = speed_table(df)
    stages = stage_table(df)
    errors = df[df["error"].fillna("") != ""] if "error" in df else pd.DataFrame()
    figures: dict[str, str] = {}
    for name, make in (("stages", lambda: stage_figure(df)),
                       ("pareto", lambda: pareto_figure(accuracy_speed_points(df, res)) if res is not None else None),
                       ("history", lambda: history_figure(hist))):
        uri = make()
        if uri:
            figures[name] = uri
    captions = {
        "stages": "Stage breakdown: share of each stage in the instrumented, sequential pass "
                  "(largest batch size); the total is written at the end of each bar.",
        "pareto": "Accuracy against end-to-end speed; red: the Pareto front (nothing is both faster and more accurate).",
        "history": "End-to-end images/s across the speed runs recorded on this machine (largest batch size).",
    }
    esc = _html.escape
    parts = [f"<section class='featbench-speed'><{h}>Speed</{h}>", f"<p>{esc(about)}</p>",
             f"<p>{esc(MODES_NOTE)}</p>",
             _fmt_frame(table).to_html(index=False, classes="speed-table", border=0)]
    md = [f"{'#' * level} Speed", "", about, "", MODES_NOTE, "", _markdown(_fmt_frame(table)), ""]
    if not stages.empty:
        parts += [f"<{h2}>Stages (ms per image)</{h2}>", _fmt_frame(stages).to_html(index=False, border=0)]
        md += [f"{'#' * (level + 1)} Stages (ms per image)", "", _markdown(_fmt_frame(stages)), ""]
    for name in ("stages", "pareto", "history"):
        if name in figures:
            parts.append(f"<figure><img alt='{name}' src='{figures[name]}'><figcaption>{esc(captions[name])}"
                         f"</figcaption></figure>")
            if markdown_images:
                md += [f"![{captions[name]}]({figures[name]})", ""]
    if "history" not in figures:
        parts.append("<p>No earlier speed runs from this machine in the history.</p>")
    if not errors.empty:
        items = "".join(f"<li><code>{esc(str(r['extractor']))}</code> ({esc(str(r['device']))}): "
                        f"{esc(str(r['error']))}</li>" for _, r in errors.iterrows())
        parts.append(f"<{h2}>Not measured</{h2}><ul>{items}</ul>")
        md += [f"{'#' * (level + 1)} Not measured", ""] + [f"- `{r['extractor']}` ({r['device']}): {r['error']}"
                                                          for _, r in errors.iterrows()] + [""]
    parts.append("</section>")
    return SpeedSection(html="\n".join(parts), markdown="\n".join(md), figures=figures)


def write_speed_page(speed: Any, out: str | Path, history: Any = None, results: Any = None) -> Path:
    """A standalone ``speed.html`` (and ``speed.md``) in ``out``; returns the HTML path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sec = speed_section(speed, history, results, level=1)
    (out / "speed.md").write_text(sec.markdown)
    page = ("<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' content='width=device-width'>"
            "<title>featbench speed</title><style>body{font-family:sans-serif;max-width:70em;margin:auto}"
            "table{border-collapse:collapse;font-size:.85em}td,th{padding:2px 8px;text-align:right}"
            "img{max-width:100%}</style></head><body>" + sec.html + "</body></html>")
    (out / "speed.html").write_text(page)
    return out / "speed.html"
