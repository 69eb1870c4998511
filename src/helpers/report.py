"""The run report: what each chapter measured, beside what its paper claimed.

Every chapter ends its "Reproduce the claim" section with::

    report = RunReport("01_simclr", "SimCLR", P, device)   # at the top, starts the clock
    report.metric("probe_bacc_simclr", 0.71)
    report.claim("SimCLR beats random init (linear probe, DR grade)",
                 paper="+x points (Chen et al. 2020, ImageNet)", ours=0.18, held=0.18 >= 0.10)
    report.publish()

``publish`` shows the table in the notebook and attaches the same record, as
JSON, to the output's metadata; the book runner (``tools/bookrunner.py``) gathers the
records from the executed notebooks into ``report.json`` and the
"Reproduction report" page, rendered by :func:`report_markdown`. This module
renders every record, in the notebook and in the book. Explained on the "For
contributors" page.
"""
from __future__ import annotations

import math
import time
from datetime import datetime, timezone

from .env import describe_device

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


VERDICTS = ("held", "not held", "undecided", "not measured")
_MARKS = {"held": "✓ held", "not held": "✗ not held", "undecided": "? undecided at this budget",
          "not measured": "—"}


def verdict(held: bool | None, refuted: bool | None = None) -> str:
    """A claim's verdict from its interval: ``held`` (it clears the threshold), ``not held`` (it is ruled out), or
    ``undecided`` (it straddles the threshold: two builds could disagree). ``held=None`` (and no ``refuted``) is
    ``not measured``; a claim recorded without ``refuted`` reads a False ``held`` as ``not held``."""
    if held:
        return "held"
    if held is None and refuted is None:
        return "not measured"
    if refuted is False:
        return "undecided"
    return "not held"


def decide(lo: float, hi: float, threshold: float, above: bool = True) -> dict:
    """``held`` / ``refuted`` for "the quantity is above (``above``) or below ``threshold``", from its interval
    ``[lo, hi]``: held when the whole interval is on the claim's side, refuted when the whole interval is on the
    other side, undecided otherwise. Keyword arguments for :meth:`RunReport.claim`."""
    lo, hi = float(lo), float(hi)
    if above:
        return {"held": lo > threshold, "refuted": hi < threshold, "interval": (lo, hi)}
    return {"held": hi < threshold, "refuted": lo > threshold, "interval": (lo, hi)}


def mark(claim: dict) -> str:
    """The verdict as the report shows it (records from before verdicts had a name are read from ``held``)."""
    return _MARKS[claim.get("verdict") or verdict(claim.get("held"), claim.get("refuted"))]


def _figure(c: dict, empty: str = "—") -> str:
    """A claim's figure as a table cell, with its budget in brackets when one is named."""
    text = _cell(c.get("ours"), empty)
    return f"{text} ({_cell(c['budget'])})" if c.get("budget") else text


def _reference(c: dict) -> str:
    """The claim measured on the shipped reference run, figure and verdict in one cell (— where not measured)."""
    r = c.get("reference")
    return f"{_figure(r)}: {mark(r)}" if r else "—"


def _has_reference(claims) -> bool:
    return any(c.get("reference") for c in claims)


class RunReport:
    """Collects one chapter's metrics and claims; ``publish()`` shows and records them."""

    def __init__(self, chapter: str, title: str, profile, device):
        self.chapter = chapter
        self.title = title
        self.profile = getattr(profile, "name", str(profile))
        if hasattr(device, "type"):  # a torch.device: describe it (GPU name, CPU threads)
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

    def claim(self, name: str, paper: str, ours, held: bool | None, note: str = "", *, refuted: bool | None = None,
              interval=None, budget: str = "", reference: dict | None = None) -> None:
        """Record a claim: the paper's figure (text, cited), this run's figure and its verdict.

        ``held``: this run's interval clears the claim's threshold; ``refuted``: the interval rules the claim out
        (it lies wholly on the wrong side). Neither → "undecided at this budget": the interval straddles the
        threshold, so another build could flip a yes/no verdict (:func:`verdict`; :func:`decide` gives all three
        from an interval). ``interval`` (lo, hi) is kept with the row; ``budget`` names this run's budget.
        ``reference`` is the same claim measured on the shipped reference run (:mod:`helpers.reference`): a dict of
        ``ours``, ``held`` and ``refuted`` (or :func:`decide`'s keys) and its ``budget``.
        """
        row = {"name": name, "paper": str(paper), "ours": _plain(ours),
               "held": None if held is None else bool(held),
               "refuted": None if refuted is None else bool(refuted),
               "interval": None if interval is None else [_plain(v) for v in interval],
               "budget": budget, "note": note}
        row["verdict"] = verdict(row["held"], row["refuted"])
        if reference is not None:
            r = dict(reference)
            held_r = r.get("held")
            row["reference"] = {"ours": _plain(r.get("ours")), "held": None if held_r is None else bool(held_r),
                                "refuted": None if r.get("refuted") is None else bool(r["refuted"]),
                                "interval": None if r.get("interval") is None else [_plain(v) for v in r["interval"]],
                                "budget": str(r.get("budget", ""))}
            row["reference"]["verdict"] = verdict(row["reference"]["held"], row["reference"]["refuted"])
        self.claims.append(row)

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
        if rec["claims"] and _has_reference(rec["claims"]):
            lines += ["| claim | paper | this run | verdict | reference run |", "|---|---|---|---|---|"]
            lines += [f"| {_cell(c['name'])} | {_cell(c['paper'], '')} | {_figure(c, '')} | {mark(c)} | "
                      f"{_reference(c)} |" for c in rec["claims"]]
            lines.append("")
        elif rec["claims"]:
            lines += ["| claim | paper | this run | verdict |", "|---|---|---|---|"]
            lines += [f"| {_cell(c['name'])} | {_cell(c['paper'], '')} | {_figure(c, '')} | {mark(c)} |"
                      for c in rec["claims"]]
            lines.append("")
        noted = [c for c in rec["claims"] if c.get("note")]
        if noted:
            lines += ["Notes on the claims:", ""] + [f"- *{_cell(c['name'])}*: {_cell(c['note'])}" for c in noted] + [""]
        if rec["metrics"]:
            lines += ["| metric | value |", "|---|---|"]
            lines += [f"| {_cell(k)} | {_cell(v, '')} |" for k, v in rec["metrics"].items()]
        return "\n".join(lines)

    def publish(self) -> dict:
        """Show the report in the notebook and attach it for the book runner."""
        rec = self.to_dict()
        try:
            from IPython.display import Markdown, display  # optional: plain Python without IPython prints instead
            display(Markdown(self.markdown(rec)), metadata={METADATA_KEY: rec})
        except ImportError:  # plain Python: print it
            print(self.markdown(rec))
        return rec


def chapter_counts(ch: dict, reference: bool = False) -> dict:
    """How many of a chapter's claims are held / not held / undecided / not measured (``reference``: on the
    reference run; a claim not measured there counts as not measured)."""
    out = dict.fromkeys(VERDICTS, 0)
    for c in ch.get("claims") or []:
        c = (c.get("reference") or {"held": None}) if reference else c
        out[c.get("verdict") or verdict(c.get("held"), c.get("refuted"))] += 1
    return out


def _claim_rows(claims, refs: bool, paper: bool = True) -> list:
    """One chapter's claims as a table whose first column is the verdict, so a phone shows it first."""
    lines = ["| verdict | claim | this run |" + (" reference run |" if refs else "") + (" paper |" if paper else ""),
             "|---|---|---|" + ("---|" if refs else "") + ("---|" if paper else "")]
    lines += [f"| {mark(c)} | {_cell(c['name'])} | {_figure(c)} |" + (f" {_reference(c)} |" if refs else "")
              + (f" {_cell(c.get('paper'), '')} |" if paper else "") for c in claims]
    noted = [c for c in claims if c.get("note")]
    if noted:
        lines += ["", "Notes:", ""] + [f"- *{_cell(c['name'])}*: {_cell(c['note'])}" for c in noted]
    return lines


def report_markdown(report: dict) -> str:
    """The book's Reproduction report (``report.json`` as input): the count of verdicts, a summary per chapter,
    then each chapter's claims with the verdict first, its notes, and its headline metrics folded away."""
    chapters = report["chapters"]
    refs = any(_has_reference(ch.get("claims") or []) for ch in chapters)
    total, total_ref = dict.fromkeys(VERDICTS, 0), dict.fromkeys(VERDICTS, 0)
    rows = []
    for ch in chapters:
        n, r = chapter_counts(ch), chapter_counts(ch, reference=True)
        total = {k: total[k] + n[k] for k in total}
        total_ref = {k: total_ref[k] + r[k] for k in total_ref}
        status = " (notebook failed)" if ch.get("status") == "failed" else ""
        extra = f" {r['held']} / {sum(r.values()) - r['not measured']} |" if refs else ""
        rows.append(f"| {_cell(ch.get('title'))}{status} | {n['held']} | {n['not held']} | {n['undecided']} |{extra}")
    n_claims = sum(total[k] for k in ("held", "not held", "undecided"))
    measured_ref = sum(total_ref.values()) - total_ref["not measured"]
    lines = [f"**{total['held']} of {n_claims} claims held** in this build (profile `{report['profile']}`); "
             f"{total['not held']} not held, {total['undecided']} undecided at this budget"
             + (f"; on the reference runs, {total_ref['held']} held of the {measured_ref} measured there" if refs
                else "") + ".", "",
             "| chapter | held | not held | undecided |" + (" reference run: held / measured |" if refs else ""),
             "|---|---|---|---|" + ("---|" if refs else "")] + rows
    extra = f" **{total_ref['held']}** / {measured_ref} |" if refs else ""
    lines += [f"| **all** | **{total['held']}** of {n_claims} | {total['not held']} | {total['undecided']} |{extra}", ""]
    for ch in chapters:
        claims = ch.get("claims") or [{"name": "(no claim recorded)", "paper": "", "ours": None, "held": None}]
        if ch.get("status") == "failed":
            claims = [{"name": "**notebook failed**", "paper": "", "ours": None, "held": None}]
        secs = f"{ch.get('notebook_seconds', ch.get('wall_time_s', 0)):.0f} s"
        lines += [f"## {_cell(ch.get('title'))}", "",
                  f"Profile `{ch.get('profile', '?')}` · {ch.get('device', '?')} · {secs}", ""]
        lines += _claim_rows(claims, _has_reference(claims)) + [""]
        metrics = ch.get("metrics") or {}
        if metrics:
            lines += ["```{admonition} Headline metrics", ":class: dropdown", ""]
            lines += [f"- `{k}` = {_cell(v)}" for k, v in metrics.items()] + ["```", ""]
    return "\n".join(lines) + "\n"


def chapter_claims_markdown(ch: dict) -> str:
    """One chapter's claims as a table (claim, this run, verdict, and the reference run where measured): the
    instructors' page shows each chapter's with the figures of the build it belongs to."""
    claims = ch.get("claims") or []
    if not claims:
        return "*(no claim recorded)*"
    return "\n".join(_claim_rows(claims, _has_reference(claims), paper=False))
