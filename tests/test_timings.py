"""Times the book states come from a measured build (issue 27): the record, its line per chapter, its page."""
import json
import re

import nbformat
import pytest

import bookrunner as book
from helpers import timings


def fake_report(profile, seconds):
    return {"profile": profile, "chapters": [{"notebook": f"{c}.ipynb", "notebook_seconds": s, "status": "ok"}
                                            for c, s in seconds.items()]}


def test_a_recorded_build_gives_each_chapter_its_line_and_the_page_its_table(tmp_path):
    path = tmp_path / "timings.json"
    timings.record(fake_report("cpu", {"01_a": 589.0, "02_b": 40.0}), "2 CPU cores", path=path, when="2026-12-07",
                   warm=fake_report("cpu", {"01_a": 19.8, "02_b": 3.0}))
    line = timings.measured("01_a", path)
    assert line == ("Measured time: cpu profile: 9.8 min the first time, 20 s with its runs cached (2 CPU cores, "
                    "measured 2026-12-07).")
    assert timings.total("cpu", path) == pytest.approx(629.0) and timings.total("gpu", path) is None
    page = timings.markdown(path)
    assert "| 01_a | 9.8 min | 20 s |" in page and "| **the book** | **10.5 min** | 23 s |" in page
    timings.record(fake_report("smoke", {"01_a": 12.0}), "CI", path=path, when="2026-12-07")
    assert "smoke profile: 12 s the first time (CI" in timings.measured("01_a", path) and "cpu profile" in timings.measured("01_a", path)
    assert "No time measured yet" in timings.measured("09_z", path)
    with pytest.raises(ValueError, match="warm build ran"):
        timings.record(fake_report("cpu", {"01_a": 1.0}), "m", warm=fake_report("smoke", {"01_a": 1.0}), path=path)


def test_the_cli_records_a_report(tmp_path, monkeypatch):
    path = tmp_path / "timings.json"
    monkeypatch.setattr(timings, "RECORD", path)
    rep = tmp_path / "report.json"
    rep.write_text(json.dumps(fake_report("cpu", {"00_x": 191.2})))
    monkeypatch.setattr(timings.record, "__defaults__", (None, path, None))
    assert timings._main([str(rep), "--machine", "two cores"]) == 0
    assert json.loads(path.read_text())["cpu"]["chapters"]["00_x"] == {"cold_s": 191.2, "warm_s": None}


def test_every_chapter_has_measured_times_and_states_none_of_its_own():
    rec = timings.load()
    chapters = [p.stem for p in book.discover()]
    for profile in ("smoke", "cpu"):
        assert profile in rec, f"no {profile} times recorded (python -m helpers.timings)"
        missing = set(chapters) - set(rec[profile]["chapters"])
        assert not missing, f"{profile}: no time recorded for {sorted(missing)}"
    estimate = re.compile(r"(≈|about|under|<)\s*(a|\d+(\.\d+)?)\s*(min|minute|s\b|second)", re.I)
    for path in book.discover():
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "markdown":
                hit = estimate.search(cell.source)
                assert not hit, f"{path.name} states a time of its own: {hit.group(0)!r} (use timings.measured)"
