"""How long each chapter takes, as measured (issue 27): the times a chapter states come from a recorded build.

``timings.json`` (beside this module, so a chapter on Colab reads it too) holds, per profile, each chapter's
wall time from a build's ``report.json`` — cold (an empty cache) and warm (everything cached) — with the
machine and the date it was measured on. A chapter prints its line with :func:`measured`; after a timed build,
``python -m helpers.timings REPORT.json [--warm WARM_REPORT.json]`` records it. Explained on the "How to run"
page; the book never states a time in prose.
"""
from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path

from .efficiency import describe_machine
from .env import atomic_write

RECORD = Path(__file__).resolve().with_name("timings.json")


def load(path: Path = RECORD) -> dict:
    """The recorded times: ``{profile: {"machine", "date", "chapters": {chapter: {"cold_s", "warm_s"}}}}``."""
    return json.loads(Path(path).read_text()) if Path(path).exists() else {}


def _span(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def measured(chapter: str, path: Path = RECORD) -> str:
    """One line for a chapter: its recorded time in every measured profile, with the machine and the date."""
    parts = []
    for profile, rec in load(path).items():
        t = rec.get("chapters", {}).get(chapter)
        if not t:
            continue
        text = f"{profile} profile: {_span(t['cold_s'])} the first time"  # printed, so plain text
        if t.get("warm_s") is not None:
            text += f", {_span(t['warm_s'])} with its runs cached"
        parts.append(f"{text} ({rec['machine']}, measured {rec['date']})")
    return ("Measured time: " + "; ".join(parts) + ".") if parts else \
        f"No time measured yet for {chapter} (python -m helpers.timings records a build's)."


def total(profile: str, path: Path = RECORD, key: str = "cold_s") -> float | None:
    """The recorded time of the whole book in ``profile`` (seconds; None where some chapter lacks one)."""
    rec = load(path).get(profile)
    if not rec or any(t.get(key) is None for t in rec["chapters"].values()):
        return None
    return sum(t[key] for t in rec["chapters"].values())


def markdown(path: Path = RECORD) -> str:
    """The record as a table per profile (chapter, first run, cached), with the total and the machine: the
    "How to run" page shows it."""
    lines = []
    for profile, rec in load(path).items():
        lines += [f"**`{profile}`**, measured on {rec['machine']} ({rec['date']}):", "",
                  "| chapter | first run | with its runs cached |", "|---|---|---|"]
        for chapter, t in rec["chapters"].items():
            warm = _span(t["warm_s"]) if t.get("warm_s") is not None else "—"
            lines.append(f"| {chapter} | {_span(t['cold_s'])} | {warm} |")
        cold, warm = total(profile, path), total(profile, path, "warm_s")
        lines += [f"| **the book** | **{_span(cold)}** | {_span(warm) if warm else '—'} |", ""]
    return "\n".join(lines) if lines else "*(no time recorded yet)*"


def record(report: dict, machine: str, warm: dict | None = None, path: Path = RECORD, when: str | None = None):
    """Write ``report``'s chapter times (its ``notebook_seconds``) into the record under its profile, with the
    warm times from ``warm`` (a second build of the same profile on the same cache). Returns the new record."""
    def times(rep):
        return {ch["notebook"].removesuffix(".ipynb"): float(ch["notebook_seconds"]) for ch in rep["chapters"]
                if ch.get("status") == "ok"}
    cold, hot = times(report), times(warm) if warm else {}
    if warm and warm["profile"] != report["profile"]:
        raise ValueError(f"the warm build ran {warm['profile']!r}, the cold one {report['profile']!r}")
    data = load(path)
    data[report["profile"]] = {"machine": machine, "date": when or date.today().isoformat(),
                               "chapters": {c: {"cold_s": round(s, 1), "warm_s": round(hot[c], 1) if c in hot else None}
                                            for c, s in cold.items()}}
    text = json.dumps(data, indent=1, ensure_ascii=False) + "\n"
    atomic_write(Path(path), lambda tmp: Path(tmp).write_text(text))
    return data


def _main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.timings", description=__doc__.split("\n")[0])
    parser.add_argument("report", help="report.json of a cold build (book/_build/source/report.json)")
    parser.add_argument("--warm", help="report.json of a second, warm build of the same profile")
    parser.add_argument("--machine", default=None, help="the machine, in words (default: this one)")
    args = parser.parse_args(argv)
    report = json.loads(Path(args.report).read_text())
    warm = json.loads(Path(args.warm).read_text()) if args.warm else None
    data = record(report, args.machine or describe_machine(), warm)
    print(f"recorded {len(data[report['profile']]['chapters'])} chapters of {report['profile']!r} in {RECORD}")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
