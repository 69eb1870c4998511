"""Every chapter in notebooks/, executed in the smoke profile, then the site built from them.

Notebooks are discovered, not listed: a new chapter is covered without touching this file.
"""
import ast
import json
import math
import re

import nbformat
import pytest
import yaml

from helpers import book
from helpers.student_copies import strip_solutions

NOTEBOOKS = book.discover()
NAMES = [p.stem for p in NOTEBOOKS]


@pytest.fixture(scope="session")
def smoke_book(tmp_path_factory, isolated_env):
    """Stage the book sources and execute every chapter once in smoke."""
    stage = tmp_path_factory.mktemp("book") / "source"
    book.stage_sources(stage)
    book.check_toc(stage)
    runs = book.execute_all("smoke", stage, cell_timeout=300)  # a hung cell fails instead of blocking CI
    report = book.report_dict(runs, "smoke")
    book.write_report(report, stage)
    return {"stage": stage, "runs": {r.name: r for r in runs}, "report": report}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_source_notebook_is_clean(path):
    nb = nbformat.read(path, as_version=4)
    book.parameters_cell_index(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.get("outputs"), f"{path.name}: saved with outputs"
            # the student copy (solutions stripped) must still be valid Python
            ast.parse(strip_solutions(cell.source))
    assert "colab.research.google.com" in nb.cells[0].source, f"{path.name}: no Open-in-Colab badge"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_colab_badge_points_at_the_configured_repository(path):
    config = yaml.safe_load((book.BOOK / "_config.yml").read_text())
    repo = config["repository"]["url"].removeprefix("https://github.com/")
    expected = f"https://colab.research.google.com/github/{repo}/blob/{config['repository']['branch']}/notebooks/{path.name}"
    nb = nbformat.read(path, as_version=4)
    links = re.findall(r"https://colab\.research\.google\.com/github/[^)\s\"]+", nb.cells[0].source)
    assert links == [expected], f"{path.name}: badge {links} should be {expected}"


@pytest.mark.notebooks
@pytest.mark.parametrize("name", NAMES)
def test_chapter_runs_in_smoke(smoke_book, name):
    run = smoke_book["runs"][name]
    assert run.error is None, f"{name} failed in smoke:\n{run.error}"
    assert run.seconds < 60, f"{name} took {run.seconds:.0f} s in smoke (budget 60 s)"


@pytest.mark.notebooks
@pytest.mark.parametrize("name", NAMES)
def test_chapter_records_finite_metrics(smoke_book, name):
    run = smoke_book["runs"][name]
    assert run.reports, f"{name} published no run report (call report.publish())"
    for rec in run.reports:
        assert rec["profile"] == "smoke"
        assert rec["metrics"], f"{name}: no metric recorded"
        for key, value in rec["metrics"].items():
            assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{name}.{key} = {value!r}"
            assert math.isfinite(value), f"{name}.{key} is not finite: {value}"
        for claim in rec["claims"]:
            assert claim["paper"] and claim["held"] in (True, False, None)
            assert claim["ours"] is not None, f"{name}: claim {claim['name']!r} has no figure"


@pytest.mark.notebooks
def test_site_builds_with_a_page_per_chapter(smoke_book):
    html = book.build_site(smoke_book["stage"])
    assert (html / "index.html").exists()
    for page in ("how-to-run", "reproduction", "data-and-weights", "instructors", "contributing", "references"):
        assert (html / f"{page}.html").exists(), page
    report_page = (html / "reproduction.html").read_text()
    for name in NAMES:
        page = html / "notebooks" / f"{name}.html"
        assert page.exists(), f"no page for chapter {name}"
        title = smoke_book["runs"][name].reports[0]["title"]
        assert title.split("—")[-1].strip()[:20] in report_page
    data = json.loads((smoke_book["stage"] / "report.json").read_text())
    assert data["profile"] == "smoke" and len(data["chapters"]) >= len(NAMES)
