"""Figures every chapter draws: image grids, loss curves, embeddings, label-efficiency and budget curves.

Written once here so chapters show results the same way; introduced in chapter 0
(image grids) and chapter 1 (the rest). Each function returns its matplotlib
figure.
"""
from __future__ import annotations

import numpy as np

from .evaluation import embed_2d


def show_images(rows: dict, titles=None, size: float = 1.6, suptitle: str = ""):
    """A grid with one row per entry of ``rows`` (``{row label: images [N, H, W, 3] in [0, 1] or uint8]}``)."""
    import matplotlib.pyplot as plt
    n = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(len(rows), n, figsize=(size * n, size * len(rows) + 0.4), squeeze=False)
    for r, (name, imgs) in enumerate(rows.items()):
        for c in range(n):
            ax = axes[r, c]
            if c < len(imgs):
                ax.imshow(imgs[c])
                if titles is not None and r == 0:
                    ax.set_title(str(titles[c]), fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_frame_on(c < len(imgs))
        axes[r, 0].set_ylabel(name, fontsize=9)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def plot_history(history, ylabel: str = "loss", chance: float | None = None, ax=None):
    """Loss curve from a ``runs.load_or_train`` history or a fastai ``Recorder``: train per batch, valid per epoch."""
    import matplotlib.pyplot as plt
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
    ax.legend(fontsize=8)
    ax.figure.tight_layout()
    return ax.figure


def plot_embedding(features: np.ndarray, colourings: dict, method: str = "pca", title: str = "", seed: int = 0):
    """Scatter the 2-D embedding of ``features`` once per colouring (``{"DR grade": labels, "site": ...}``)."""
    import matplotlib.pyplot as plt
    xy = embed_2d(features, method, seed)
    fig, axes = plt.subplots(1, len(colourings), figsize=(4.5 * len(colourings), 4), squeeze=False)
    for ax, (name, labels) in zip(axes[0], colourings.items()):
        labels = np.asarray(labels)
        for value in np.unique(labels):
            sel = labels == value
            ax.scatter(xy[sel, 0], xy[sel, 1], s=6, alpha=0.7, label=str(value))
        ax.set_title(f"{title} — coloured by {name}" if title else name, fontsize=9)
        ax.legend(fontsize=7, markerscale=2, loc="best")
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
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.3 * len(tasks), 3.1), squeeze=False)
    for ax, task in zip(axes[0], tasks):
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
        ax.set_title(task, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
    axes[0, 0].set_ylabel(ylabel, fontsize=8)
    axes[0, -1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def plot_reference_gains(gains, tasks, threshold: float, this_run: dict | None = None, label: str = "this run",
                         title: str = ""):
    """The gain over random init (points) vs pretraining epochs of a reference run, one panel per task (chapters
    1–2): ``gains`` is :func:`helpers.reference.gains` output (its 95 % bootstrap band shaded), ``threshold`` the
    claim's bar, ``this_run`` ``{task: (epochs, gain)}`` marks the chapter's own run at its budget."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(tasks), figsize=(2.6 * len(tasks), 2.9), sharey=True, squeeze=False)
    for ax, task in zip(axes[0], tasks):
        g = gains[gains["task"] == task].sort_values("epoch")
        ax.plot(g["epoch"], 100 * g["diff"], "o-", color="C0", label="reference run")
        ax.fill_between(g["epoch"], 100 * g["lo"], 100 * g["hi"], color="C0", alpha=0.2)
        if this_run and task in this_run:
            e, v = this_run[task]
            ax.plot([e], [100 * v], "s", color="C1", ms=7, label=label)
        ax.axhline(100 * threshold, color="k", ls="--", lw=1, label=f"claim: +{100 * threshold:.0f}")
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xscale("log")
        ax.set_title(task, fontsize=10)
        ax.set_xlabel("pretraining epochs", fontsize=9)
    axes[0, 0].set_ylabel("gain over random init\n(points, 95% CI)", fontsize=9)
    axes[0, -1].legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def flow_diagram(rows, title: str = "", note: str = ""):
    """A method diagram: each row a list of boxes drawn left to right with arrows (``[["x", "view 1", ...], ...]``).

    Boxes with the same text in several rows are drawn once per row; chapter 1
    draws SimCLR's image → two views → encoder → head → loss with it.
    """
    import matplotlib.pyplot as plt
    width = max(len(r) for r in rows)
    fig, ax = plt.subplots(figsize=(1.9 * width, 0.9 * len(rows) + 0.6))
    for r, row in enumerate(rows):
        y = len(rows) - 1 - r
        for c, text in enumerate(row):
            if not text:
                continue
            ax.text(c, y, text, ha="center", va="center", fontsize=9,
                    bbox=dict(boxstyle="round,pad=0.4", fc=f"C{c % 10}", alpha=0.18, ec=f"C{c % 10}"))
            if c + 1 < len(row) and row[c + 1]:
                ax.annotate("", xy=(c + 0.62, y), xytext=(c + 0.38, y), arrowprops=dict(arrowstyle="->", lw=1.2))
    ax.set_xlim(-0.6, width - 0.4)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=10)
    if note:
        fig.text(0.5, 0.01, note, ha="center", fontsize=8, style="italic")
    fig.tight_layout()
    return fig
