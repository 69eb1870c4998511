"""Every chapter in notebooks/, executed in the smoke profile, then the site built from them.

Notebooks are discovered, not listed: a new chapter is covered without touching this file.
"""
import ast
import json
import math
import re
import shutil
import subprocess

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


@pytest.fixture(scope="session")
def student_runs(tmp_path_factory, isolated_env):
    """The student copy of every chapter (every exercise unsolved), executed in smoke."""
    from helpers.student_copies import write_student_copies
    folder = tmp_path_factory.mktemp("student")
    runs = {}
    for path in write_student_copies(NOTEBOOKS, folder):
        runs[path.stem] = (book.execute(path, folder / "executed" / path.name, "smoke", timeout=300,
                                        progress=False), path)
    return runs


@pytest.mark.notebooks
@pytest.mark.parametrize("name", NAMES)
def test_student_copy_runs_to_the_end_with_every_exercise_pending(student_runs, name):
    run, path = student_runs[name]
    assert run.error is None, f"the student copy of {name} fails with its exercises unsolved:\n{run.error}"
    nb = nbformat.read(run.executed, as_version=4)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    exercises = sum("# BEGIN SOLUTION" in c.source for c in nbformat.read(NOTEBOOKS[NAMES.index(name)],
                                                                            as_version=4).cells)
    assert text.count("not attempted yet") == exercises, f"{name}: each unsolved exercise should say so once"
    assert "Traceback" not in text


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
    branch = config["repository"]["branch"]
    # the badge opens the student copy (solutions stay in the instructor copy)
    expected = f"https://colab.research.google.com/github/{repo}/blob/{branch}/notebooks/student/{path.name}"
    nb = nbformat.read(path, as_version=4)
    links = re.findall(r"https://colab\.research\.google\.com/github/[^)\s\"]+", nb.cells[0].source)
    assert links == [expected], f"{path.name}: badge {links} should be {expected}"
    # the Colab install cell installs the package from the same repository
    installs = [c.source for c in nb.cells if c.cell_type == "code" and "google.colab" in c.source]
    assert installs and f"git+https://github.com/{repo}" in installs[0], f"{path.name}: install cell URL"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_committed_student_copy_is_current(path):
    """notebooks/student/ holds what `make student-copies` writes now: a chapter edit without it fails here."""
    from helpers.student_copies import student_copy
    committed = book.STUDENT / path.name
    assert committed.exists(), f"no student copy of {path.name}: run `make student-copies`"
    fresh = student_copy(nbformat.read(path, as_version=4))
    have = nbformat.read(committed, as_version=4)
    assert [c.source for c in have.cells] == [c.source for c in fresh.cells], \
        f"notebooks/student/{path.name} is out of date: run `make student-copies`"


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
            # issue 26: every measured claim says whether its interval rules it out, so a straddling interval
            # reads "undecided" instead of flipping between builds
            assert claim["verdict"] in ("held", "not held", "undecided", "not measured")
            assert claim["held"] is None or claim["held"] or claim["refuted"] is not None, \
                f"{name}: claim {claim['name']!r} is not held but does not say whether it is ruled out (refuted=)"
            assert claim["ours"] is not None, f"{name}: claim {claim['name']!r} has no figure"


@pytest.fixture(scope="session")
def site(smoke_book):
    """The site built once from the smoke run."""
    return book.build_site(smoke_book["stage"])


@pytest.mark.notebooks
def test_site_builds_with_a_page_per_chapter(smoke_book, site):
    html = site
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
    problems = check_html(html)
    assert not problems, "\n".join(problems[:20])


def check_html(root):
    """Broken internal links and images, and Markdown tables left as raw text, in every built page."""
    from html.parser import HTMLParser
    from urllib.parse import unquote, urlparse

    class Page(HTMLParser):
        def __init__(self):
            super().__init__()
            self.refs, self.text, self.skip = [], [], 0

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            for key in ("href", "src"):
                if a.get(key):
                    self.refs.append((tag, a[key]))
            if tag in ("script", "style", "pre", "code"):
                self.skip += 1

        def handle_endtag(self, tag):
            if tag in ("script", "style", "pre", "code") and self.skip:
                self.skip -= 1

        def handle_data(self, data):
            if not self.skip:
                self.text.append(data)

    problems = []
    for page in sorted(root.rglob("*.html")):
        if page.relative_to(root).parts[0] in ("_static", "_sources"):  # the theme's templates, not pages
            continue
        p = Page()
        p.feed(page.read_text(errors="replace"))
        for tag, ref in p.refs:
            u = urlparse(ref)
            if u.scheme or ref.startswith(("#", "mailto:", "//", "data:")):
                continue
            target = (page.parent / unquote(u.path)).resolve() if u.path else page
            if not target.exists():
                problems.append(f"{page.relative_to(root)}: <{tag}> points at missing {ref}")
        if re.search(r"\|\s*-{3,}\s*\|", "".join(p.text)):
            problems.append(f"{page.relative_to(root)}: a Markdown table is shown as raw text")
    return problems


def test_the_html_check_finds_broken_links_and_raw_tables(tmp_path):
    (tmp_path / "img.png").write_bytes(b"x")
    (tmp_path / "good.html").write_text('<a href="#top">a</a><img src="img.png"><a href="https://x.org">x</a>'
                                        "<table><tr><td>ok</td></tr></table><pre>| --- |</pre>")
    assert check_html(tmp_path) == []
    (tmp_path / "bad.html").write_text('<a href="missing.html">m</a><p>| a | b |\n|---|---|</p>')
    problems = check_html(tmp_path)
    assert len(problems) == 2 and "missing.html" in problems[0] and "raw text" in problems[1]


def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def browser_problems(exe, root):
    """JavaScript errors, pages Chromium cannot render, and raw Markdown tables after rendering, per page."""
    pages = [p for p in sorted(root.rglob("*.html")) if p.relative_to(root).parts[0] not in ("_static", "_sources")]
    problems = []
    for page in pages:
        proc = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
                               "--virtual-time-budget=3000", "--dump-dom", page.as_uri()],
                              capture_output=True, text=True, timeout=120)
        errors = [line for line in proc.stderr.splitlines()
                  if "CONSOLE" in line and re.search(r"Uncaught|Error", line)]
        problems += [f"{page.relative_to(root)}: {e}" for e in errors]
        if proc.returncode != 0 or "<body" not in proc.stdout:
            problems.append(f"{page.relative_to(root)}: Chromium could not render it (exit {proc.returncode})")
        text = re.sub(r"<(script|style|pre|code)[^>]*>.*?</\1>", "", proc.stdout, flags=re.S)
        if re.search(r"\|\s*-{3,}\s*\|", re.sub(r"<[^>]+>", "", text)):
            problems.append(f"{page.relative_to(root)}: a Markdown table is shown as raw text")
    return pages, problems


@pytest.mark.notebooks
def test_pages_load_in_a_real_browser_without_errors(site):
    """Every page in headless Chromium: no JavaScript error, no Markdown table left as raw text after rendering.

    CI runs it only where Chromium is installed (`.ci/run` does not install it: about 250 MB)."""
    exe = chromium()
    if exe is None:
        pytest.skip("no Chromium on this machine (`apt-get install chromium` enables this check)")
    pages, problems = browser_problems(exe, site)
    assert pages
    assert not problems, "\n".join(problems[:20])


def test_the_browser_check_sees_a_script_error_and_a_raw_table(tmp_path):
    exe = chromium()
    if exe is None:
        pytest.skip("no Chromium on this machine")
    (tmp_path / "ok.html").write_text("<html><body><p>fine</p><script>const a = 1;</script></body></html>")
    (tmp_path / "bad.html").write_text("<html><body><script>const a = 1;</script><script>const a = 2;</script>"
                                       "<p>| a |</p><p>|---|</p></body></html>")
    pages, problems = browser_problems(exe, tmp_path)
    assert len(pages) == 2 and all(p.startswith("bad.html") for p in problems) and len(problems) == 2
