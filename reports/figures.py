"""Figures (matplotlib, Agg): each function returns a Figure; the report embeds it as a PNG data URI."""
from __future__ import annotations

import base64
import io
import math
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

DPI = 100
plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
                     "figure.dpi": DPI, "savefig.dpi": DPI})


def png_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _short(text: str, n: int = 38) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _wrap(text: str, width: int = 30, lines: int = 3) -> str:
    """Break a long label into lines (at '@', ' ', ':' where possible) instead of cutting it."""
    import textwrap

    parts = textwrap.wrap(text.replace("@", " @").replace(":", ": "), width=width, break_long_words=True)
    parts = [p.replace(" @", "@").replace(": ", ":") for p in parts]
    if len(parts) > lines:
        parts = parts[: lines - 1] + [_short(" ".join(parts[lines - 1:]), width)]
    return "\n".join(parts)


def heatmap(labels: Sequence[str], tasks: Sequence[str], values: np.ndarray, best: np.ndarray,
            title: str = ""):
    """Accuracy (%) of every variant (rows) on every task (columns); best of each column outlined."""
    import seaborn as sns

    h = max(2.2, 0.32 * len(labels) + 1.6)
    w = max(4.5, 0.9 * len(tasks) + 0.09 * max((len(l) for l in labels), default=10) + 2)
    fig, ax = plt.subplots(figsize=(min(w, 16), min(h, 30)))
    data = pd.DataFrame(values * 100, index=[_short(l, 52) for l in labels], columns=[_short(t, 36) for t in tasks])
    sns.heatmap(data, annot=len(labels) * len(tasks) <= 600, fmt=".1f", cmap="viridis", vmin=0, vmax=100,
                cbar_kws={"label": "accuracy (%)"}, ax=ax, linewidths=0.5, linecolor="white",
                annot_kws={"fontsize": 7})
    for (i, j), b in np.ndenumerate(best):
        if b:
            ax.add_patch(plt.Rectangle((j, i), 1, 1, fill=False, edgecolor="red", lw=2))
    ax.set_xlabel("")
    ax.set_ylabel("")
    ax.tick_params(axis="x", rotation=35)
    plt.setp(ax.get_xticklabels(), ha="right")
    if title:
        ax.set_title(title)
    return fig


def layer_study(extractor: str, layers: Sequence[str], series: dict[str, tuple[np.ndarray, np.ndarray]],
                metric_label: str):
    """Accuracy against depth: one line per task, x = layers in network order."""
    fig, ax = plt.subplots(figsize=(max(5.5, 0.7 * len(layers) + 3), 3.8))
    x = np.arange(len(layers))
    for task, (mean, std) in series.items():
        ok = ~np.isnan(mean)
        ax.errorbar(x[ok], mean[ok] * 100, yerr=std[ok] * 100, marker="o", capsize=3, label=_short(task, 40))
    ax.set_xticks(x, [_short(l, 22) for l in layers], rotation=30, ha="right")
    ax.set_xlabel("layer (input → output)")
    ax.set_ylabel(f"{metric_label} (%)")
    ax.set_title(f"{extractor}: accuracy against depth")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=7)
    return fig


def pareto_front(speed: np.ndarray, acc: np.ndarray) -> np.ndarray:
    """Boolean mask of points no other point beats in both speed and accuracy."""
    n = len(speed)
    mask = np.ones(n, dtype=bool)
    for i in range(n):
        for j in range(n):
            if i != j and speed[j] >= speed[i] and acc[j] >= acc[i] and (speed[j] > speed[i] or acc[j] > acc[i]):
                mask[i] = False
                break
    return mask


def speed_accuracy(panels: list[tuple[str, pd.DataFrame]], ylabel: str):
    """One panel per device kind: points (img_per_s, acc, label, is_cnn, front); Pareto front as a step line."""
    cols = min(2, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 4.4 * rows), squeeze=False)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    for ax, (title, pts) in zip(axes.flat, panels):
        complete = pts["complete"] if "complete" in pts else pd.Series(True, index=pts.index)
        for is_cnn, marker, color in ((False, "s", "tab:blue"), (True, "o", "tab:orange")):
            sub = pts[(pts["is_cnn"] == is_cnn) & complete]
            ax.scatter(sub["img_per_s"], sub["acc"] * 100, marker=marker, s=50, c=color,
                       label="CNN" if is_cnn else "classical", zorder=3, edgecolor="black", linewidth=0.5)
            part = pts[(pts["is_cnn"] == is_cnn) & ~complete]
            if len(part):
                ax.scatter(part["img_per_s"], part["acc"] * 100, marker=marker, s=50, facecolors="none",
                           edgecolors=color, linewidth=1.2, zorder=3,
                           label=("CNN" if is_cnn else "classical") + ", not on all tasks")
        front = pts[pts["front"]].sort_values("img_per_s")
        if len(front):
            # staircase of what is attainable: at speed >= x, the best accuracy of a front point
            ax.step(front["img_per_s"], front["acc"] * 100, where="pre", color="red", lw=1.2, alpha=0.7,
                    label="Pareto front", zorder=2)
        ax.set_xscale("log")
        lo, hi = np.log10(pts["img_per_s"].min()), np.log10(pts["img_per_s"].max())
        pad = max(0.15, 0.08 * (hi - lo))
        ax.set_xlim(10 ** (lo - pad), 10 ** (hi + pad))
        ymin, ymax = pts["acc"].min() * 100, pts["acc"].max() * 100
        ax.set_ylim(max(0, ymin - 8), min(100, ymax + 8))
        for _, p in pts.iterrows():
            right = hi > lo and (np.log10(p["img_per_s"]) - lo) / (hi - lo) > 0.6
            ax.annotate(_wrap(p["label"], 26, 2), (p["img_per_s"], p["acc"] * 100), fontsize=7,
                        xytext=(-5 if right else 5, 4), textcoords="offset points", ha="right" if right else "left")
        ax.set_xlabel("images / s (feature extraction, log scale)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
        ax.legend(loc="best", fontsize=7)
    fig.tight_layout()
    return fig


def domain_matrices(dataset: str, sources: Sequence[str], targets: Sequence[str],
                    panels: list[tuple[str, np.ndarray]]):
    """Source (rows) × target (columns) accuracy matrices, one panel per variant (plain imshow: fast)."""
    n = len(panels)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    side = max(2.4, 0.5 * max(len(sources), len(targets)) + 1.4)
    fig, axes = plt.subplots(rows, cols, figsize=(side * cols + 0.4, side * rows + 0.5), squeeze=False)
    cmap = plt.get_cmap("magma").with_extremes(bad="#e6e6e6")
    for ax, (label, mat) in zip(axes.flat, panels):
        ax.imshow(np.ma.masked_invalid(mat * 100), vmin=0, vmax=100, cmap=cmap)
        for (i, j), v in np.ndenumerate(mat):
            if np.isfinite(v):
                ax.text(j, i, f"{100 * v:.1f}", ha="center", va="center", fontsize=7,
                        color="white" if v < 0.6 else "black")
        ax.set_xticks(range(len(targets)), targets, fontsize=7, rotation=30 if len(targets) > 3 else 0)
        ax.set_yticks(range(len(sources)), sources, fontsize=7)
        ax.set_title(_wrap(label, 34, 2), fontsize=8)
        ax.set_xlabel("target", fontsize=7)
        ax.set_ylabel("source", fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(f"{dataset}: source → target accuracy (%)", fontsize=10)
    fig.tight_layout()
    return fig


def confusion_pair(task: str, panels: list[tuple[str, np.ndarray, list[str]]]):
    """Row-normalised confusion matrices (true class rows, predicted columns) side by side."""
    import seaborn as sns

    k = len(panels[0][2])
    side = min(9.0, max(3.6, 0.32 * k + 2.2))
    fig, axes = plt.subplots(1, len(panels), figsize=(side * len(panels), side), squeeze=False)
    for ax, (title, cm, classes) in zip(axes[0], panels):
        with np.errstate(invalid="ignore", divide="ignore"):
            norm = cm / cm.sum(axis=1, keepdims=True)
        ticks = [_short(c, 16) for c in classes] if len(classes) <= 40 else False
        sns.heatmap(norm * 100, vmin=0, vmax=100, cmap="Blues", square=True, cbar=False, ax=ax,
                    xticklabels=ticks, yticklabels=ticks, annot=len(classes) <= 12, fmt=".0f",
                    annot_kws={"fontsize": 6})
        ax.set_title(_wrap(title, 48, 2), fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.tick_params(labelsize=6)
    fig.suptitle(f"{task}: confusion (row-normalised, %, summed over trials)", fontsize=10)
    fig.tight_layout()
    return fig


def embedding_panels(panels: list[tuple[str, np.ndarray, np.ndarray]], classes: Sequence[str], title: str):
    """2-D embeddings (t-SNE), one panel per feature, points coloured by class."""
    n = len(panels)
    cols = n if n <= 3 else (2 if n == 4 else 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.0 * cols, 4.1 * rows), squeeze=False)
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for ax, (name, Y, labels) in zip(axes.flat, panels):
        for c in range(len(classes)):
            sel = labels == c
            if sel.any():
                ax.scatter(Y[sel, 0], Y[sel, 1], s=9, color=cmap(c % cmap.N), label=_short(str(classes[c]), 18))
        ax.set_title(_wrap(name, 38, 2), fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if len(classes) <= 20:
        handles, names = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, names, loc="lower center", ncol=min(5, len(classes)), fontsize=7, markerscale=2,
                   bbox_to_anchor=(0.5, -0.02 - 0.025 * math.ceil(len(classes) / 5)))
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def close_all() -> None:
    plt.close("all")

