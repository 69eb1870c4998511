"""Training output a reader can scroll past (issue 27): fastai's progress bars, without the epoch table under them.

fastai prints one table row per epoch under its progress bar; over a chapter's runs that is thousands of
pixels of numbers. Importing this module (``helpers.runs`` does) changes fastai's ``ProgressCallback`` in two
places, with fastai's own ``@patch``: the rows are kept instead of written under the bar, and when the fit ends
one line sums the run up — epochs, the train and validation losses at the start and the end, a sparkline of
the validation loss (or of the training loss when there is none), the time — with the full table folded
underneath (a ``<details>`` element in a notebook, collapsed until clicked; plain text elsewhere). The bars
themselves are unchanged. Chapter 1 explains runs; figures.plot_history draws a run's full loss curve.
"""
from __future__ import annotations

import html
import math

from fastai.callback.progress import ProgressCallback
from fastcore.basics import patch
from fastprogress.fastprogress import IN_NOTEBOOK
from IPython.display import HTML, display

SPARKS = "▁▂▃▄▅▆▇█"
_after_fit = ProgressCallback.after_fit


def sparkline(values, width: int = 24) -> str:
    """``values`` as a line of block characters, resampled to at most ``width`` (the lowest is ▁)."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return ""
    if len(vals) > width:
        vals = [vals[round(i * (len(vals) - 1) / (width - 1))] for i in range(width)]
    lo, hi = min(vals), max(vals)
    span = (hi - lo) or 1.0
    return "".join(SPARKS[min(len(SPARKS) - 1, int((v - lo) / span * len(SPARKS)))] for v in vals)


def summary(header, rows) -> str:
    """One line for a finished fit from fastai's epoch table (``header`` its column names, ``rows`` its rows)."""
    col = {name: i for i, name in enumerate(header)}

    def column(name):
        out = []
        for r in rows:
            try:
                out.append(float(r[col[name]]))
            except (KeyError, IndexError, TypeError, ValueError):
                pass
        return out
    train, valid = column("train_loss"), column("valid_loss")
    parts = [f"{len(rows)} epoch{'s' if len(rows) != 1 else ''}"]
    if train:
        parts.append(f"train loss {train[0]:.4g} → {train[-1]:.4g}")
    if valid:
        parts.append(f"valid loss {valid[0]:.4g} → {valid[-1]:.4g}")
    curve = sparkline(valid if len(valid) > 1 else train)
    if curve:
        parts.append(curve)
    if rows and "time" in col:
        parts.append(f"last epoch {rows[-1][col['time']]}")
    return " · ".join(parts)


def table_html(header, rows) -> str:
    """fastai's epoch table, folded: a ``<details>`` element whose summary is :func:`summary`."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>" for r in rows)
    return (f"<details><summary>{html.escape(summary(header, rows))} (click for the epoch table)</summary>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></details>")


@patch
def _write_stats(self: ProgressCallback, log):
    """Keep the row (the first call gives the column names) for the folded table instead of writing it."""
    row = [f"{v:.6f}" if isinstance(v, float) else str(v) for v in log]
    if not hasattr(self, "header") or self.header is None:
        self.header, self.rows = row, []
    else:
        self.rows.append(row)


@patch
def after_fit(self: ProgressCallback):
    """fastai's own after_fit, then the run's one-line summary with its table folded underneath."""
    header, rows = getattr(self, "header", None), getattr(self, "rows", [])
    self.header, self.rows = None, []
    _after_fit(self)
    if not header or not rows:
        return
    if IN_NOTEBOOK:
        display(HTML(table_html(header, rows)))
    else:
        print(summary(header, rows))
