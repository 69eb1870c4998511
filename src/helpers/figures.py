"""Figures every chapter draws: image grids, loss curves, embeddings, label-efficiency and budget curves.

Written once here so chapters show results the same way; introduced in chapter 0
(image grids) and chapter 1 (the rest). Each function returns its matplotlib
figure.

Readable on the page: the site shows a figure at the width of its text column
(about 745 px on a desktop), so a figure at most ``MAX_WIDTH_IN`` inches wide at
100 dpi is shown at three quarters of its size or more, and text of at least
``MIN_FONT_PT`` points stays at 9 px or more as displayed. Importing this module
sets that style; :func:`panels` lays several panels out in rows within the width.
"""
from __future__ import annotations

import math
import textwrap

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np

from .evaluation import embed_2d

MAX_WIDTH_IN = 10.0   # widest figure, inches (1,000 px at 100 dpi)
MIN_FONT_PT = 9       # smallest text, points
STYLE = {"figure.dpi": 100, "font.size": 10, "axes.titlesize": 10, "axes.labelsize": 10, "xtick.labelsize": 9,
         "ytick.labelsize": 9, "legend.fontsize": 9, "legend.title_fontsize": 9, "figure.titlesize": 11}
mpl.rcParams.update(STYLE)


def panels(n: int, width: float, height: float, max_cols: int | None = None, **kw):
    """``n`` panels of ``width`` × ``height`` inches in as many rows as the page width needs: ``(fig, axes)``
    with ``axes`` a flat list of the ``n`` panels (unused cells hidden). ``kw`` goes to ``plt.subplots``."""
    cols = max(1, min(n, int(MAX_WIDTH_IN // width), max_cols or n))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(min(width * cols, MAX_WIDTH_IN), height * rows), squeeze=False, **kw)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def show_images(rows: dict, titles=None, size: float = 1.6, suptitle: str = ""):
    """A grid with one row per entry of ``rows`` (``{row label: images [N, H, W, 3] in [0, 1] or uint8]}``)."""
    n = max(len(v) for v in rows.values())
    label_w = 0.3 + 0.075 * max(len(str(k)) for k in rows)  # room for the row labels, inches
    size = min(size, (MAX_WIDTH_IN - label_w) / n)
    fig, axes = plt.subplots(len(rows), n, figsize=(size * n + label_w, size * len(rows) + 0.5), squeeze=False)
    for r, (name, imgs) in enumerate(rows.items()):
        for c in range(n):
            ax = axes[r, c]
            if c < len(imgs):
                ax.imshow(imgs[c])
                if titles is not None and r == 0:
                    ax.set_title(str(titles[c]))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_frame_on(c < len(imgs))
        axes[r, 0].set_ylabel(name, rotation=0, ha="right", va="center")  # across: a long label fits its row
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def plot_history(history, ylabel: str = "loss", chance: float | None = None, ax=None):
    """Loss curve from a ``runs.load_or_train`` history or a fastai ``Recorder``: train per batch, valid per epoch."""
    if hasattr(history, "losses"):  # a fastai Recorder
        values = [v for v in history.values if v]
        history = {"train": [float(x) for x in history.losses], "valid": [float(v[1]) for v in values if len(v) > 1]}
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 3.2))
    train, valid = history["train"], history.get("valid", [])
    ax.plot(train, lw=0.8, label="train (per batch)")
    if valid:
        steps = np.linspace(len(train) / len(valid), len(train), len(valid))
        ax.plot(steps, valid, "o-", label="validation (per epoch)")
    if chance is not None:
        ax.axhline(chance, color="grey", ls=":", label="chance level")
    ax.set_xlabel("batch")
    ax.set_ylabel(ylabel)
    ax.legend()
    ax.figure.tight_layout()
    return ax.figure


def plot_embedding(features: np.ndarray, colourings: dict, method: str = "pca", title: str = "", seed: int = 0):
    """Scatter the 2-D embedding of ``features`` once per colouring (``{"DR grade": labels, "site": ...}``)."""
    xy = embed_2d(features, method, seed)
    fig, axes = panels(len(colourings), 4.5, 4)
    for ax, (name, labels) in zip(axes, colourings.items()):
        labels = np.asarray(labels)
        for value in np.unique(labels):
            sel = labels == value
            ax.scatter(xy[sel, 0], xy[sel, 1], s=6, alpha=0.7, label=str(value))
        ax.set_title(f"{title} — coloured by {name}" if title else name)
        ax.legend(markerscale=2, loc="best")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def plot_by_task(summary, x: str, line: str, tasks, xlabel: str, levels: dict | None = None, logx: bool = False,
                 chance: dict | None = None, ylabel: str = "balanced accuracy (test)"):
    """One panel per task: ``mean`` vs ``x`` with a ± sd band, one line per value of ``line``.

    ``summary`` is :func:`helpers.evaluation.summarise` output; ``levels`` adds
    horizontal reference lines per task (``{label: {task: value}}``), e.g. the
    random-init and supervised levels of a budget curve.
    """
    fig, axes = panels(len(tasks), 3.3, 3.1)
    for ax, task in zip(axes, tasks):
        s = summary[summary["task"] == task]
        for name, g in s.groupby(line, sort=False):
            g = g.sort_values(x)
            ax.plot(g[x], g["mean"], "o-", label=str(name))
            if g["sd"].notna().any():
                ax.fill_between(g[x], g["mean"] - g["sd"].fillna(0), g["mean"] + g["sd"].fillna(0), alpha=0.2)
        for j, (label, per_task) in enumerate((levels or {}).items()):
            if task in per_task:
                ax.axhline(per_task[task], color=f"C{j + 3}", ls="--", lw=1, label=label)
        if chance and task in chance:
            ax.axhline(chance[task], color="grey", ls=":", lw=1, label="chance")
        if logx:
            ax.set_xscale("log")
        ax.set_title(task)
        ax.set_xlabel(xlabel)
    axes[0].set_ylabel(ylabel)
    axes[-1].legend(loc="best")
    fig.tight_layout()
    return fig


def plot_reference_gains(gains, tasks, threshold: float, this_run: dict | None = None, label: str = "this run",
                         title: str = ""):
    """The gain over random init (points) vs pretraining epochs of a reference run, one panel per task (chapters
    1–2): ``gains`` is :func:`helpers.reference.gains` output (its 95 % bootstrap band shaded), ``threshold`` the
    claim's bar, ``this_run`` ``{task: (epochs, gain)}`` marks the chapter's own run at its budget."""
    fig, axes = panels(len(tasks), 2.45, 2.9, sharey=True)
    for ax, task in zip(axes, tasks):
        g = gains[gains["task"] == task].sort_values("epoch")
        ax.plot(g["epoch"], 100 * g["diff"], "o-", color="C0", label="reference run")
        ax.fill_between(g["epoch"], 100 * g["lo"], 100 * g["hi"], color="C0", alpha=0.2)
        if this_run and task in this_run:
            e, v = this_run[task]
            ax.plot([e], [100 * v], "s", color="C1", ms=7, label=label)
        ax.axhline(100 * threshold, color="k", ls="--", lw=1, label=f"claim: +{100 * threshold:.0f}")
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xscale("log")
        ax.set_title(task)
        ax.set_xlabel("pretraining epochs")
    axes[0].set_ylabel("gain over random init\n(points, 95% CI)")
    axes[-1].legend(loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# how each kind of arrow is drawn in a method diagram, and the words its legend gives it
ARROWS = {"grad": dict(color="k", ls="-", text="data and gradients"),
          "data": dict(color="0.35", ls="-", text="data, no gradient needed"),
          "stop": dict(color="tab:red", ls="--", text="stop-gradient: no gradient flows back"),
          "ema": dict(color="tab:purple", ls=":", text="EMA: weights copied slowly, not trained")}


def method_diagram(boxes: dict, arrows, title: str = "", note: str = ""):
    """One method's diagram (chapters 1–6): labelled boxes on a grid and the arrows between them.

    ``boxes`` is ``{key: (column, row, text)}`` (row 0 at the top; fractions allowed), ``arrows`` a list of
    ``(from, to, kind)`` or ``(from, to, kind, label)`` with ``kind`` one of :data:`ARROWS`: ``grad`` where data
    flows and gradients flow back, ``data`` where only data flows, ``stop`` for a stop-gradient, ``ema`` for a
    moving-average copy of weights. A legend names every kind used. ``fig.boxes`` and ``fig.arrow_labels`` keep the
    text artists, so a test can check that nothing overlaps.
    """
    cols = max(c for c, _, _ in boxes.values()) + 1
    rows = max(r for _, r, _ in boxes.values()) + 1
    col_in = min(1.75, (MAX_WIDTH_IN - 0.3) / cols)
    fig, ax = plt.subplots(figsize=(col_in * cols + 0.3, 0.95 * rows + 1.0))
    ax.set_xlim(-0.5, cols - 0.5)
    ax.set_ylim(rows - 0.5, -0.55)
    ax.axis("off")
    wrap = max(8, int(col_in * 10.5))
    artists = {}
    for k, (c, r, text) in boxes.items():
        text = text if "$" in text else textwrap.fill(text, wrap)  # maths ($...$) is never broken
        artists[k] = ax.text(c, r, text, ha="center", va="center", fontsize=MIN_FONT_PT,
                             zorder=3, bbox=dict(boxstyle="round,pad=0.35", fc="white", ec="0.3", lw=1))
    fig.canvas.draw()
    labels, kinds = [], []
    for a in arrows:
        src, dst, kind = a[:3]
        style = ARROWS[kind]
        kinds.append(kind)
        ax.annotate("", xy=(0.5, 0.5), xycoords=artists[dst], xytext=(0.5, 0.5), textcoords=artists[src],
                    arrowprops=dict(arrowstyle="-|>", color=style["color"], ls=style["ls"], lw=1.3, shrinkA=3,
                                    shrinkB=3, patchA=artists[src].get_bbox_patch(),
                                    patchB=artists[dst].get_bbox_patch(), mutation_scale=12), zorder=2)
        if len(a) > 3 and a[3]:
            (c0, r0, _), (c1, r1, _) = boxes[src], boxes[dst]
            # a short horizontal arrow has no room for words: its label goes above it; another's sits on it, a
            # little nearer its start (the end is where arrows converge on a box)
            f = 0.5 if abs(r0 - r1) < 0.3 else 0.42
            x, y = c0 + f * (c1 - c0), r0 + f * (r1 - r0) - (0.36 if abs(r0 - r1) < 0.3 else 0)
            labels.append(ax.text(x, y, a[3], ha="center", va="center", fontsize=MIN_FONT_PT,
                                  color=style["color"], zorder=4,
                                  bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none")))
    used = list(dict.fromkeys(kinds))
    handles = [mpl.lines.Line2D([], [], color=ARROWS[k]["color"], ls=ARROWS[k]["ls"], lw=1.3) for k in used]
    height = fig.get_size_inches()[1]
    note_h = 0.3 if note else 0.0
    fig.legend(handles, [ARROWS[k]["text"] for k in used], loc="lower center", ncol=min(len(used), 2),
               frameon=False, bbox_to_anchor=(0.5, note_h / height))
    if title:
        ax.set_title(title)
    if note:
        fig.text(0.5, 0.08 / height, textwrap.fill(note, 110), ha="center", va="bottom", style="italic")
    legend_h = 0.25 * ((len(used) + 1) // 2) + 0.15
    fig.tight_layout(rect=(0, (note_h + legend_h) / height, 1, 1))
    fig.boxes, fig.arrow_labels = artists, labels
    return fig
