"""Gallery drawings (matplotlib, Agg) from what a run kept in ``gallery/`` (:mod:`featbench.gallery`).

Each panel function draws on one Axes; the figure functions lay panels out as rows of images.
"""
from __future__ import annotations

import io
import math
from typing import Any, Sequence

import numpy as np

from .figures import plt

PANEL_IN = 1.55  # inches per panel
THUMB_IN = 1.05
THUMB_COLS = 8
KEYPOINTS_DRAWN = 150


def read_rgb(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def off(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for s in ax.spines.values():
        s.set_visible(False)


def _upsample(m: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    import cv2

    return cv2.resize(np.asarray(m, np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def draw_photo(ax, photo: np.ndarray, title: str) -> None:
    ax.imshow(photo)
    ax.set_xlabel(title, fontsize=7, labelpad=2)
    off(ax)


def draw_keypoints(ax, photo: np.ndarray, vis: dict[str, np.ndarray], title: str) -> None:
    """Circles of the keypoint's diameter with a radius along its orientation (OpenCV's rich keypoints)."""
    from matplotlib.collections import LineCollection
    from matplotlib.patches import Circle

    h, w = (int(v) for v in vis["shape"])
    ax.imshow(photo, extent=(0, w, h, 0), alpha=0.8)
    kps = vis["kps"][:KEYPOINTS_DRAWN]  # strongest first: more would hide the image
    for x, y, size, _ in kps:
        ax.add_patch(Circle((x, y), max(size / 2, 1.0), fill=False, lw=0.5, color="#00ff66", alpha=0.85))
    oriented = kps[kps[:, 3] >= 0]
    if len(oriented):
        a = np.deg2rad(oriented[:, 3])  # clockwise on screen: image y axis points down
        r = np.maximum(oriented[:, 2] / 2, 1.0)
        segs = np.stack([oriented[:, :2], oriented[:, :2] + np.stack([r * np.cos(a), r * np.sin(a)], 1)], 1)
        ax.add_collection(LineCollection(segs, colors="#ffee00", linewidths=0.5))
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_xlabel(title, fontsize=7, labelpad=2)
    off(ax)


def draw_dense_grid(ax, photo: np.ndarray, vis: dict[str, np.ndarray], title: str) -> None:
    """Every grid centre as a dot; the patch diameters drawn once, around the centre nearest the middle."""
    from matplotlib.patches import Circle

    h, w = (int(v) for v in vis["shape"])
    ax.imshow(photo, extent=(0, w, h, 0), alpha=0.8)
    c = vis["centres"]
    ax.scatter(c[:, 0], c[:, 1], s=0.3, color="#00ff66", linewidths=0)
    if len(c):
        mid = c[np.argmin(((c - [w / 2, h / 2]) ** 2).sum(1))]
        for size in vis["sizes"]:
            ax.add_patch(Circle(tuple(mid), float(size) / 2, fill=False, lw=0.8, color="#ffee00"))
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_xlabel(title, fontsize=7, labelpad=2)
    off(ax)


def draw_hog(ax, photo: np.ndarray, vis: dict[str, np.ndarray], title: str) -> None:
    """The grey image squashed to HOG's square, and per cell one line per orientation bin along the
    edge it stands for (gradient angle + 90 degrees), brighter for a larger bin value."""
    from matplotlib.collections import LineCollection

    size, cell = int(vis["size"]), int(vis["cell"])
    cells = vis["cells"]
    grey = photo.mean(2) if photo.ndim == 3 else photo
    ax.set_facecolor("black")
    ax.imshow(_upsample(grey, (size, size)), cmap="gray", extent=(0, size, size, 0), alpha=0.3)
    rows, cols, bins = cells.shape
    top = float(np.percentile(cells, 99)) or 1.0
    segs, colours = [], []
    for b in range(bins):
        edge = np.deg2rad((b + 0.5) * 180.0 / bins + 90.0)
        dx, dy = 0.5 * cell * math.cos(edge), 0.5 * cell * math.sin(edge)
        for r in range(rows):
            for c in range(cols):
                v = cells[r, c, b] / top
                if v > 0.25:
                    x, y = (c + 0.5) * cell, (r + 0.5) * cell
                    segs.append([(x - dx, y - dy), (x + dx, y + dy)])
                    colours.append((1.0, 1.0, 1.0, float(min(1.0, v * v))))  # dominant orientations stand out
    ax.add_collection(LineCollection(segs, colors=colours, linewidths=0.8))
    ax.set_xlim(0, size)
    ax.set_ylim(size, 0)
    ax.set_xlabel(title, fontsize=7, labelpad=2)
    off(ax)


def draw_heat(ax, crop: np.ndarray, m: np.ndarray, title: str, cmap: str = "inferno") -> None:
    """A map (activation or CAM) stretched over the crop the network saw, min-max scaled."""
    ax.imshow(crop)
    up = _upsample(m, crop.shape[:2])
    lo, hi = float(up.min()), float(up.max())
    ax.imshow((up - lo) / (hi - lo) if hi > lo else np.zeros_like(up), cmap=cmap, alpha=0.55, vmin=0, vmax=1)
    ax.set_xlabel(title, fontsize=7, labelpad=2)
    off(ax)


def grid(rows: int, cols: int, title: str, panel: float = PANEL_IN):
    """Rows of square panels (constrained layout keeps the title and the captions under each panel clear)."""
    fig, axes = plt.subplots(rows, cols, figsize=(panel * cols, (panel + 0.15) * rows + 0.4), squeeze=False,
                             layout="constrained")
    fig.get_layout_engine().set(w_pad=0.02, h_pad=0.02, hspace=0.02, wspace=0.02)
    fig.suptitle(title, fontsize=9)
    return fig, axes


def finish(fig) -> Any:
    return fig


def filters_figure(filters: np.ndarray, title: str):
    """First-layer filters ``[out, 3, k, k]`` as RGB tiles, each min-max scaled on its own."""
    n = len(filters)
    cols = min(16, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(0.55 * cols, 0.55 * rows + 0.45), squeeze=False)
    for ax in axes.flat:
        off(ax)
    for ax, f in zip(axes.flat, filters):
        tile = np.transpose(f, (1, 2, 0)) if f.shape[0] == 3 else f.mean(0)
        lo, hi = float(tile.min()), float(tile.max())
        ax.imshow((tile - lo) / (hi - lo) if hi > lo else np.zeros_like(tile), interpolation="nearest",
                  cmap=None if tile.ndim == 3 else "gray")
    fig.suptitle(title, fontsize=8)
    fig.tight_layout(pad=0.2, h_pad=0.1, w_pad=0.1)
    return fig


def thumbs_figure(items: Sequence[tuple[np.ndarray | None, str]], title: str):
    """Thumbnails with a caption under each (``None`` pixels: the run kept no thumbnail)."""
    cols = min(THUMB_COLS, max(1, len(items)))
    rows = max(1, math.ceil(len(items) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(THUMB_IN * cols, (THUMB_IN + 0.32) * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        off(ax)
    for ax, (pixels, caption) in zip(axes.flat, items):
        if pixels is None:
            ax.text(0.5, 0.5, "no thumbnail", ha="center", va="center", fontsize=6, color="gray")
        else:
            ax.imshow(pixels)
        ax.set_xlabel(caption, fontsize=6, labelpad=1)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(pad=0.3, h_pad=0.3, w_pad=0.2)
    return fig


def label(text: str, n: int = 16) -> str:
    """``text`` cut to ``n`` characters (with an ellipsis) for a panel caption."""
    text = str(text)
    return text if len(text) <= n else text[: n - 1] + "…"
