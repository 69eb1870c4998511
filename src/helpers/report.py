"""The run report: what each chapter measured, beside what its paper claimed.

Every chapter ends its "Reproduce the claim" section with::

    report = RunReport("01_simclr", "SimCLR", P, device)   # at the top, starts the clock
    report.metric("probe_bacc_simclr", 0.71)
    report.claim("SimCLR beats random init (linear probe, DR grade)",
                 paper="+x points (Chen et al. 2020, ImageNet)", ours=0.18, held=0.18 >= 0.10)
    report.publish()

``publish`` shows the table in the notebook and attaches the same record, as
JSON, to the output's metadata; the book runner (``helpers.book``) gathers the
records from the executed notebooks into ``report.json`` and the
"Reproduction report" page, rendered by :func:`report_markdown`. This module
renders every record, in the notebook and in the book. Explained on the "For
contributors" page.
"""
from __future__ import annotations

import math
import time
from datetime import datetime, timezone

METADATA_KEY = "retina_report"


def _plain(value):
    """Numbers as Python floats/ints (NumPy and torch scalars included), the rest as given."""
    if hasattr(value, "item") and callable(value.item):
        try:
            value = value.item()
        except (ValueError, RuntimeError):
            pass
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def _cell(value, empty: str = "—") -> str:
    """One value as text for a Markdown table cell: yes/no, 4 significant digits, pipes escaped."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if value is None or value == "":
        return empty
    return str(value).replace("|", "\\|").replace("\n", " ")


class RunReport:
    """Collects one chapter's metrics and claims; ``publish()`` shows and records them."""

    def __init__(self, chapter: str, title: str, profile, device):
        self.chapter = chapter
        self.title = title
        self.profile = getattr(profile, "name", str(profile))
        if hasattr(device, "type"):  # a torch.device: describe it (GPU name, CPU threads)
            from .env import describe_device
            device = describe_device(device)
        self.device = str(device)
        self.started = time.perf_counter()
        self.metrics: dict[str, object] = {}
        self.notes: dict[str, str] = {}
        self.claims: list[dict] = []

    def metric(self, name: str, value, note: str = "") -> None:
        """Record a headline metric (a finite number is expected; the tests check it)."""
        self.metrics[name] = _plain(value)
        if note:
            self.notes[name] = note

    def claim(self, name: str, paper: str, ours, held: bool | None, note: str = "") -> None:
        """Record a claim: the paper's figure (text, cited), this run's figure, held or not."""
        self.claims.append({
            "name": name, "paper": str(paper), "ours": _plain(ours),
            "held": None if held is None else bool(held), "note": note,
        })

    def to_dict(self) -> dict:
        return {
            "chapter": self.chapter,
            "title": self.title,
            "profile": self.profile,
            "device": self.device,
            "wall_time_s": round(time.perf_counter() - self.started, 2),
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "metrics": dict(self.metrics),
            "metric_notes": dict(self.notes),
            "claims": list(self.claims),
        }

    def markdown(self, record: dict | None = None) -> str:
        rec = record or self.to_dict()
        lines = [f"**Run report — {rec['title']}** · profile `{rec['profile']}` · "
                 f"device `{rec['device']}` · {rec['wall_time_s']:.0f} s", ""]
        if rec["claims"]:
            lines += ["| claim | paper | this run | held |", "|---|---|---|---|"]
            for c in rec["claims"]:
                lines.append(f"| {_cell(c['name'])} | {_cell(c['paper'], '')} | {_cell(c['ours'], '')} | "
                             f"{_cell(c['held'])} |")
            lines.append("")
        if rec["metrics"]:
            lines += ["| metric | value |", "|---|---|"]
            lines += [f"| {_cell(k)} | {_cell(v, '')} |" for k, v in rec["metrics"].items()]
        return "\n".join(lines)

    def publish(self) -> dict:
        """Show the report in the notebook and attach it for the book runner."""
        rec = self.to_dict()
        try:
            from IPython.display import Markdown, display
            display(Markdown(self.markdown(rec)), metadata={METADATA_KEY: rec})
        except ImportError:  # plain Python: print it
            print(self.markdown(rec))
        return rec


def report_markdown(report: dict) -> str:
    """The book's Reproduction report table: one row per claim, chapter by chapter (``report.json`` as input)."""
    lines = [f"Profile of this build: `{report['profile']}`.", "",
             "| chapter | claim | paper | this run | held | profile · device | time |",
             "|---|---|---|---|---|---|---|"]
    for ch in report["chapters"]:
        where = f"{ch.get('profile', '?')} · {ch.get('device', '?')}"
        secs = f"{ch.get('notebook_seconds', ch.get('wall_time_s', 0)):.0f} s"
        claims = ch.get("claims") or [{"name": "(no claim recorded)", "paper": "", "ours": None, "held": None}]
        if ch.get("status") == "failed":
            claims = [{"name": "**notebook failed**", "paper": "", "ours": None, "held": None}]
        for c in claims:
            held = c.get("held")
            mark = "—" if held is None else ("✓ held" if held else "✗ not held")
            lines.append(f"| {_cell(ch.get('title'))} | {_cell(c['name'])} | {_cell(c['paper'])} | "
                         f"{_cell(c['ours'])} | {mark} | {where} | {secs} |")
    lines += ["", "Headline metrics per chapter:", ""]
    for ch in report["chapters"]:
        metrics = ch.get("metrics") or {}
        if metrics:
            lines.append(f"- **{_cell(ch.get('title'))}**: " +
                         ", ".join(f"`{k}` = {_cell(v)}" for k, v in metrics.items()))
    return "\n".join(lines) + "\n"
