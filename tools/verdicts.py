"""Each claim's verdict from a build's ``report.json``, kept as a small record, and two records compared.

A build's verdicts must not depend on the build: two cold builds of the same code give the same verdict on
every claim (issue 26), and a change that only moves code gives the verdicts it had before (issue 28). The
book's builds write ``report.json`` beside the site sources (``book/_build/source/report.json``)::

    python tools/verdicts.py record book/_build/source/report.json tools/build_records/cpu-<commit>.json
    python tools/verdicts.py compare tools/build_records/cpu-A.json tools/build_records/cpu-B.json

``compare`` prints every claim whose verdict differs (this run or the reference run) and exits 1 if any does,
or if a claim is in one record only.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from helpers.report import verdict


def claim_verdicts(report: dict) -> dict:
    """``{chapter: {claim name: {"run": verdict, "reference": verdict}}}`` from a build's report; a failed
    chapter is recorded as ``{"failed": ...}`` so that it never compares equal to a chapter that ran."""
    out = {}
    for ch in report["chapters"]:
        name = ch.get("chapter") or ch.get("title")
        if ch.get("status") == "failed":
            out[name] = {"failed": {"run": "failed", "reference": "failed"}}
            continue
        rows = {}
        for c in ch.get("claims") or []:
            ref = c.get("reference") or {"held": None}
            rows[c["name"]] = {"run": c.get("verdict") or verdict(c.get("held"), c.get("refuted")),
                               "reference": ref.get("verdict") or verdict(ref.get("held"), ref.get("refuted"))}
        out[name] = rows
    return out


def record(report: dict, commit: str = "", note: str = "") -> dict:
    """What a build record keeps: profile, commit, machine, chapter times, and each claim's verdicts."""
    chapters = report["chapters"]
    return {"profile": report.get("profile"), "commit": commit, "note": note,
            "machine": sorted({str(ch.get("device")) for ch in chapters if ch.get("device")}),
            "seconds": {ch.get("chapter"): round(float(ch.get("notebook_seconds", ch.get("wall_time_s", 0))), 1)
                        for ch in chapters},
            "verdicts": claim_verdicts(report)}


def counts(rec: dict, which: str = "run") -> dict:
    """How many claims of a record are held / not held / undecided (``which``: ``run`` or ``reference``)."""
    out = {}
    for rows in rec["verdicts"].values():
        for v in rows.values():
            out[v[which]] = out.get(v[which], 0) + 1
    return out


def differences(a: dict, b: dict) -> list:
    """Every ``(chapter, claim, which, verdict in a, verdict in b)`` that differs between two records; a claim
    missing from one record differs with ``None`` on that side."""
    out = []
    va, vb = a["verdicts"], b["verdicts"]
    for ch in sorted(set(va) | set(vb)):
        ra, rb = va.get(ch, {}), vb.get(ch, {})
        for claim in sorted(set(ra) | set(rb)):
            for which in ("run", "reference"):
                x, y = (ra.get(claim) or {}).get(which), (rb.get(claim) or {}).get(which)
                if x != y:
                    out.append((ch, claim, which, x, y))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python tools/verdicts.py", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record", help="keep a build's verdicts")
    r.add_argument("report")
    r.add_argument("out")
    r.add_argument("--commit", default="")
    r.add_argument("--note", default="", help="how the build ran (machine, cold or warm)")
    c = sub.add_parser("compare", help="list the claims whose verdicts differ; exit 1 if any")
    c.add_argument("a")
    c.add_argument("b")
    args = ap.parse_args(argv)
    if args.cmd == "record":
        rec = record(json.loads(Path(args.report).read_text()), args.commit, args.note)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(rec, indent=1, ensure_ascii=False) + "\n")
        tmp.replace(out)
        print(f"{out}: {counts(rec)} (reference runs: {counts(rec, 'reference')})")
        return 0
    a, b = (json.loads(Path(p).read_text()) for p in (args.a, args.b))
    diff = differences(a, b)
    for ch, claim, which, x, y in diff:
        print(f"{ch} · {claim} · {which}: {x} → {y}")
    print(f"{len(diff)} verdicts differ; {args.a}: {counts(a)}; {args.b}: {counts(b)}")
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main())
