import math

import numpy as np
import torch

from helpers.report import METADATA_KEY, RunReport, report_markdown


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
    assert "| Demo | A \\| B second line | x | — | — |" in book_md
