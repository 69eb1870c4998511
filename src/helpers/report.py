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
"Reproduction report" page. Explained on the "For contributors" page.
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


def _fmt(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return "" if value is None else str(value)


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
                lines.append(f"| {c['name']} | {c['paper']} | {_fmt(c['ours'])} | "
                             f"{'—' if c['held'] is None else _fmt(c['held'])} |")
            lines.append("")
        if rec["metrics"]:
            lines += ["| metric | value |", "|---|---|"]
            lines += [f"| {k} | {_fmt(v)} |" for k, v in rec["metrics"].items()]
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
