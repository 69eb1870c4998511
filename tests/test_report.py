import math

import numpy as np
import torch

from helpers.report import METADATA_KEY, RunReport, chapter_counts, decide, report_markdown


def test_record_is_plain_json_and_rendered():
    rep = RunReport("99_demo", "Demo chapter", "smoke", "cpu")
    rep.metric("acc", np.float32(0.5))
    rep.metric("loss", torch.tensor(1.25))
    rep.claim("beats chance", paper="+10 points", ours=0.2, held=True)
    rec = rep.to_dict()
    assert rec["metrics"] == {"acc": 0.5, "loss": 1.25}
    assert isinstance(rec["metrics"]["acc"], float)
    assert rec["claims"][0]["held"] is True
    assert rec["profile"] == "smoke" and math.isfinite(rec["wall_time_s"])
    md = rep.markdown()
    assert "beats chance" in md and "| acc | 0.5 |" in md


def test_a_claims_note_is_shown_under_the_table():
    """A claim's note (how it was measured, why it is undecided) reaches the reader, not only report.json."""
    rep = RunReport("99_demo", "Demo", "smoke", "cpu")
    rep.claim("gain > 0", paper="x", ours=0.1, held=None, note="undecided with 3 seeds: about 12 seeds would decide it")
    rep.claim("no note", paper="x", ours=0.1, held=True)
    md = rep.markdown()
    assert "- *gain > 0*: undecided with 3 seeds: about 12 seeds would decide it" in md
    assert "*no note*" not in md


def test_publish_attaches_the_record(monkeypatch):
    shown = []
    import IPython.display as disp
    monkeypatch.setattr(disp, "display", lambda obj, metadata=None: shown.append((obj, metadata)))
    rep = RunReport("99_demo", "Demo", "smoke", "cpu")
    rep.metric("x", 1)
    rec = rep.publish()
    assert shown and shown[0][1][METADATA_KEY] == rec


def test_report_markdown_marks_claims():
    report = {"profile": "cpu", "chapters": [
        {"title": "Ch A", "profile": "cpu", "device": "cpu", "notebook_seconds": 3.0, "status": "ok",
         "metrics": {"m": 0.5}, "claims": [{"name": "c1", "paper": "+2.5 %", "ours": 0.031, "held": True},
                                           {"name": "c2", "paper": "x", "ours": 0.0, "held": False}]}]}
    md = report_markdown(report)
    assert "✓ held" in md and "✗ not held" in md and "+2.5 %" in md and "`m` = 0.5" in md


def test_both_renderings_keep_the_table_intact():
    """One renderer for records: a pipe or a newline in a claim cannot split a row, in the notebook or the book."""
    rep = RunReport("99_demo", "Demo", "smoke", "cpu")
    rep.claim("A | B\nsecond line", paper="x", ours=None, held=None)
    rep.metric("nan", float("nan"))
    md = rep.markdown()
    row = next(line for line in md.splitlines() if "A \\| B" in line)
    assert row == "| A \\| B second line | x |  | — |" and "| nan | nan |" in md
    book_md = report_markdown({"profile": "smoke", "chapters": [dict(rep.to_dict(), status="ok")]})
    assert "| — | A \\| B second line | — | x |" in book_md  # verdict first, then claim, this run, paper


def test_a_straddling_interval_is_undecided_not_a_verdict():
    """Issue 26: a claim whose interval straddles its threshold is 'undecided at this budget', in both renderings."""
    from helpers.report import decide, verdict
    assert decide(0.01, 0.05, 0.0) == {"held": True, "refuted": False, "interval": (0.01, 0.05)}
    assert decide(-0.05, -0.01, 0.0)["refuted"] and not decide(-0.05, -0.01, 0.0)["held"]
    assert decide(-0.01, 0.05, 0.0) == {"held": False, "refuted": False, "interval": (-0.01, 0.05)}
    assert decide(-0.05, -0.02, -0.01, above=False)["held"]  # "below -1 point"
    assert verdict(True) == "held" and verdict(False) == "not held" and verdict(None) == "not measured"
    assert verdict(False, False) == "undecided" and verdict(False, True) == "not held"
    rep = RunReport("99_demo", "Demo", "cpu", "cpu")
    rep.claim("straddles", paper="+1", ours="+0.5 [-1, +2]", **decide(-0.01, 0.02, 0.0), budget="5 epochs")
    rep.claim("clears", paper="+1", ours="+3", **decide(0.01, 0.05, 0.0))
    rep.claim("ruled out", paper="+1", ours="-3", **decide(-0.05, -0.01, 0.0))
    rec = rep.to_dict()
    assert [c["verdict"] for c in rec["claims"]] == ["undecided", "held", "not held"]
    assert rec["claims"][0]["interval"] == [-0.01, 0.02]
    md = rep.markdown()
    assert "? undecided at this budget" in md and "+0.5 [-1, +2] (5 epochs)" in md
    book = report_markdown({"profile": "cpu", "chapters": [dict(rec, status="ok")]})
    assert "| Demo | 1 | 1 | 1 |" in book and "**1** of 3" in book
    rep.claim("a | b", paper="x", ours="y | z", held=True, budget="1 | 2")  # escaped once, budget included
    assert "| y \\| z (1 \\| 2) | ✓ held |" in rep.markdown()



def test_reference_run_column_and_counts():
    rep = RunReport("01_x", "X", "cpu", "cpu")
    rep.claim("gain", paper="+10", ours="+4 [+1, +7]", **decide(0.01, 0.07, 0.10), budget="30 epochs",
              reference={"ours": "+13 [+11, +15]", **decide(0.11, 0.15, 0.10), "budget": "300 epochs, 1 seed"})
    rep.claim("ablation", paper="+2", ours="+3", held=True, refuted=False)
    rec = rep.to_dict()
    assert rec["claims"][0]["verdict"] == "not held" and rec["claims"][0]["reference"]["verdict"] == "held"
    md = rep.markdown(rec)
    assert "| reference run |" in md and "+13 [+11, +15] (300 epochs, 1 seed): ✓ held" in md
    assert md.splitlines()[3].count("|") == md.splitlines()[2].count("|")  # every row has the column
    page = report_markdown({"profile": "cpu", "chapters": [rec]})
    assert "reference run: held / measured" in page and "| **all** | **1** of 2 | 1 | 0 | **1** / 1 |" in page
    assert chapter_counts(rec, reference=True) == {"held": 1, "not held": 0, "undecided": 0, "not measured": 1}
    # a build without any reference run keeps the narrower table
    plain = RunReport("02_y", "Y", "cpu", "cpu")
    plain.claim("c", paper="p", ours=1, held=True)
    assert "reference run" not in report_markdown({"profile": "cpu", "chapters": [plain.to_dict()]})


def test_the_reproduction_page_reads_at_a_glance():
    """Issue 27: the count first, a summary row per chapter, then each chapter's claims with the verdict in the first
    column (on a phone it is the column on screen), the notes, and the metrics folded away."""
    a = RunReport("01_a", "Chapter 1 — A", "cpu", "cpu")
    a.claim("gain", paper="+10", ours="+12", **decide(0.08, 0.16, 0.05))
    a.claim("margin", paper="+1", ours="-0.9", **decide(-0.019, -0.0, -0.01), note="about 40 seeds would decide it")
    a.metric("m", 0.5)
    b = RunReport("02_b", "Chapter 2 — B", "cpu", "cpu")
    b.claim("collapse", paper="x", ours="y", **decide(-0.3, -0.1, 0.0))
    page = report_markdown({"profile": "cpu", "chapters": [dict(a.to_dict(), status="ok"), dict(b.to_dict(), status="ok")]})
    lines = page.splitlines()
    assert lines[0].startswith("**1 of 3 claims held** in this build (profile `cpu`); 1 not held, 1 undecided")
    assert "| Chapter 1 — A | 1 | 0 | 1 |" in page and "| Chapter 2 — B | 0 | 1 | 0 |" in page
    assert "## Chapter 1 — A" in page and "## Chapter 2 — B" in page
    rows = [line for line in lines if line.startswith("| ") and ("gain" in line or "margin" in line or "collapse" in line)]
    assert [r.split(" | ")[0] for r in rows] == ["| ✓ held", "| ? undecided at this budget", "| ✗ not held"]
    assert "- *margin*: about 40 seeds would decide it" in page
    assert ":class: dropdown" in page and "- `m` = 0.5" in page
