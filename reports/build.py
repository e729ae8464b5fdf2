"""Build report.md and a self-contained report.html from one or more run folders."""
from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pandas as pd

from featbench.errors import FeatbenchError


def load_runs(run_dirs: list[Path]) -> tuple[pd.DataFrame, list[dict]]:
    frames, metas = [], []
    for d in run_dirs:
        d = Path(d)
        csv, meta = d / "results.csv", d / "run.json"
        if not csv.is_file():
            raise FeatbenchError(f"{d}: no results.csv (is it a featbench run folder?)")
        frames.append(pd.read_csv(csv, keep_default_na=False, na_values=[""]))
        metas.append(json.loads(meta.read_text()) if meta.is_file() else {})
    return pd.concat(frames, ignore_index=True), metas


def accuracy_table(df: pd.DataFrame, metric: str = "top1") -> pd.DataFrame:
    """Mean ± std over trials, one row per task × extractor × layer × method × classifier."""
    keys = ["task", "family", "extractor", "layer", "method", "classifier"]
    g = df.groupby(keys, dropna=False)[metric].agg(["mean", "std", "count"]).reset_index()
    g["std"] = g["std"].fillna(0.0)
    return g


def _fig_to_data_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def speed_figure(df: pd.DataFrame) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    agg = df.groupby(["extractor", "layer", "device"], dropna=False).agg(
        top1=("top1", "mean"), img_per_s=("img_per_s", "median")).reset_index()
    agg["label"] = agg["extractor"] + agg["layer"].fillna("").map(lambda l: f"@{l}" if l else "")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sns.scatterplot(data=agg, x="img_per_s", y="top1", hue="label", style="device", s=80, ax=ax)
    ax.set_xscale("log")
    ax.set_xlabel("images / s (extraction, log scale)")
    ax.set_ylabel("top-1 accuracy (mean over tasks)")
    ax.legend(fontsize=7, loc="best")
    uri = _fig_to_data_uri(fig)
    plt.close(fig)
    return uri


def build_report(run_dirs: list[Path], out: Path) -> Path:
    df, metas = load_runs(list(run_dirs))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = accuracy_table(df)
    table["top1 (mean ± std)"] = [f"{m * 100:.1f} ± {s * 100:.1f}" for m, s in zip(table["mean"], table["std"])]
    shown = table[["task", "extractor", "layer", "method", "classifier", "top1 (mean ± std)", "count"]]
    skipped = [s for m in metas for s in m.get("skipped_images", [])]
    md = ["# featbench report", "", shown.to_markdown(index=False) if _has_tabulate() else shown.to_string(index=False), ""]
    if skipped:
        md += ["## Skipped images", ""] + [f"- {s['relpath']}: {s['reason']}" for s in skipped] + [""]
    (out / "report.md").write_text("\n".join(md))
    html = ["<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' content='width=device-width'>",
            "<title>featbench report</title></head><body><h1>featbench report</h1>",
            shown.to_html(index=False), f"<img alt='accuracy vs speed' src='{speed_figure(df)}'>"]
    if skipped:
        html.append("<h2>Skipped images</h2><ul>" + "".join(f"<li>{s['relpath']}: {s['reason']}</li>" for s in skipped) + "</ul>")
    html.append("</body></html>")
    (out / "report.html").write_text("\n".join(html))
    return out / "report.html"


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
        return True
    except ImportError:
        return False
