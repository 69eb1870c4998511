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

import bookrunner as book
from student_copies import strip_solutions

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
    from student_copies import write_student_copies
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


@pytest.mark.notebooks
@pytest.mark.parametrize("name", NAMES)
def test_an_unsolved_student_copy_reaches_the_instructor_copys_verdicts(student_runs, smoke_book, name):
    """Issue 27: the exercises teach, they do not steer the claims: the student copy, every exercise unsolved,
    records the same claims with the same verdicts and figures as the instructor's copy, every exercise solved."""
    student, _ = student_runs[name]
    teacher = smoke_book["runs"][name]
    got = [(c["name"], c["verdict"], str(c["ours"])) for r in student.reports for c in r["claims"]]
    want = [(c["name"], c["verdict"], str(c["ours"])) for r in teacher.reports for c in r["claims"]]
    assert got and got == want, f"{name}: the student copy's claims differ from the instructor copy's"


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
    from student_copies import student_copy
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

    `.ci/run` installs Debian's Chromium where it is missing; elsewhere the check skips, saying why."""
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


# --- issue 27: the student's page ------------------------------------------------------------------------------

@pytest.mark.notebooks
@pytest.mark.parametrize("name", NAMES)
def test_every_figure_is_drawn_within_the_page_width(smoke_book, name):
    """A figure at most ``figures.MAX_WIDTH_IN`` wide at 100 dpi keeps its 9-pt text at 9 px or more when the site
    shows it at the text column's width (book/_static/book.css)."""
    import base64
    import struct

    from helpers import figures
    nb = nbformat.read(smoke_book["stage"] / "notebooks" / f"{name}.ipynb", as_version=4)
    widths = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            png = out.get("data", {}).get("image/png")
            if png:
                w, h = struct.unpack(">II", base64.b64decode(png)[16:24])
                widths.append(w)
                assert w <= figures.MAX_WIDTH_IN * 100 + 20, f"{name} cell {i}: a figure {w} px wide (most 1,000)"
    assert widths, f"{name} shows no figure"


def test_no_chapter_sets_text_below_the_books_smallest_size():
    from helpers import figures
    small = re.compile(r"fontsize\s*=\s*([0-9.]+)")
    for path in NOTEBOOKS:
        for i, cell in enumerate(nbformat.read(path, as_version=4).cells):
            for size in small.findall(cell.source):
                assert float(size) >= figures.MIN_FONT_PT, f"{path.name} cell {i}: fontsize={size}"


@pytest.mark.notebooks
def test_the_site_serves_mathjax_itself_and_the_rocket_opens_the_student_copy(site):
    """Maths must render with no network (MathJax from _static/), and the launch button must open the student copy
    of a chapter, like its badge."""
    assert (site / "_static" / "mathjax" / "tex-chtml.js").exists()
    for page in sorted((site / "notebooks").glob("0*.html")):
        html = page.read_text()
        scripts = re.findall(r'<script[^>]+src="([^"]*mathjax[^"]*)"', html, flags=re.I)
        assert all(not s.startswith(("http:", "https:", "//")) for s in scripts), (page.name, scripts)
        source = next((p for p in NOTEBOOKS if p.stem == page.stem), None)
        if source is not None and "$$" in source.read_text():  # Sphinx loads MathJax only where there is maths
            assert scripts, f"{page.name} has maths but loads no MathJax"
        colab = re.findall(r'href="(https://colab\.research\.google\.com/[^"]+)"', html)
        assert colab, f"{page.name}: no Colab link"
        assert all("/notebooks/student/" in u for u in colab), f"{page.name}: {colab}"


def test_the_launch_link_rewrite():
    import sys
    sys.path.insert(0, str(book.BOOK / "_ext"))
    from student_launch import student_url
    u = "https://colab.research.google.com/github/o/r/blob/main/notebooks/01_simclr.ipynb"
    assert student_url(u) == "https://colab.research.google.com/github/o/r/blob/main/notebooks/student/01_simclr.ipynb"
    assert student_url(student_url(u)) == student_url(u)  # idempotent
    assert student_url("https://x.org/blob/main/book/intro.md") == "https://x.org/blob/main/book/intro.md"


PROBE = """<!doctype html><html><body style="margin:0">
<iframe id="page" src="PAGE" style="width:WIDTHpx;height:900px;border:0"></iframe>
<script>
const frame = document.getElementById("page");
frame.addEventListener("load", () => setTimeout(() => {
  const w = frame.contentWindow, d = frame.contentDocument;
  const ready = (w.MathJax && w.MathJax.startup && w.MathJax.startup.promise) || Promise.resolve();
  ready.then(() => {
    const col = d.querySelector("article.bd-article") || d.querySelector("main") || d.body;
    const out = {viewport: w.innerWidth, column: col.getBoundingClientRect().width, raw: [],
                 maths: d.querySelectorAll("mjx-container").length};
    out.figures = [...d.querySelectorAll(".cell_output img")].map(im => ({
      shown: im.getBoundingClientRect().width, natural: im.naturalWidth,
      box: (im.closest(".output") || im.parentElement).getBoundingClientRect().width}));
    out.cut = [...d.querySelectorAll(".cell_output .output.stream pre")].filter(p => p.scrollWidth > p.clientWidth + 1)
      .map(p => p.textContent.trim().slice(0, 80));
    const walk = d.createTreeWalker(d.body, w.NodeFilter.SHOW_TEXT);
    while (walk.nextNode()) {
      const n = walk.currentNode;
      if (n.parentElement.closest("script, style, pre, code, mjx-container, .highlight")) continue;
      if (/\\$\\$|\\\\\\(|\\\\\\[/.test(n.nodeValue)) out.raw.push(n.nodeValue.trim().slice(0, 80));
    }
    out.headers = [...d.querySelectorAll("th")].map(th => {
      const r = th.getBoundingClientRect(); return {text: th.textContent.trim(), left: r.left, right: r.right}; });
    const pre = document.createElement("pre"); pre.id = "layout-probe"; pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
  });
}, 500));
</script></body></html>"""


def layout(exe, page, width, root):
    """What Chromium lays out on ``page`` (a file under the site folder ``root``) in a frame ``width`` CSS px wide
    (a phone is narrower than headless Chromium's smallest window): figures' shown and natural widths, text
    still holding raw TeX, typeset maths, table headers' positions. The site is served on 127.0.0.1, so the
    probe page can read the frame (see PROBE)."""
    import functools
    import html as html_lib
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    probe = root / "_layout_probe.html"
    probe.write_text(PROBE.replace("PAGE", "/" + page.relative_to(root).as_posix()).replace("WIDTH", str(width)))
    try:
        proc = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", f"--window-size={width + 40},1000",
                               "--virtual-time-budget=20000", "--dump-dom",
                               f"http://127.0.0.1:{server.server_address[1]}/_layout_probe.html"],
                              capture_output=True, text=True, timeout=180)
    finally:
        server.shutdown()
        probe.unlink()
    m = re.search(r'<pre id="layout-probe">(.*?)</pre>', proc.stdout, flags=re.S)
    assert m, f"{page.name}: the layout probe did not run (exit {proc.returncode}): {proc.stderr[-500:]}"
    return json.loads(html_lib.unescape(m.group(1)))


@pytest.mark.notebooks
def test_chapters_render_maths_and_readable_figures_in_a_real_browser(site):
    """Headless Chromium at 1,366 px: no raw $$ or \\( left in the rendered text, the maths typeset, every
    figure shown at >= 90 % of its column or at its own size, never below 72 % of it (9-pt text >= 9 px), and no
    printed line (a check's answer) cut off at the column's edge."""
    exe = chromium()
    if exe is None:
        pytest.skip("no Chromium on this machine (`apt-get install chromium`; .ci/run installs it)")
    for page in sorted((site / "notebooks").glob("0*.html")):
        got = layout(exe, page, 1366, site)
        assert not got["raw"], f"{page.name}: raw TeX in the rendered text: {got['raw'][:3]}"
        source = next((p for p in NOTEBOOKS if p.stem == page.stem), None)
        if source is not None and "$$" in source.read_text():
            assert got["maths"] > 0, f"{page.name}: no maths typeset"
        assert got["figures"], f"{page.name}: no figure"
        assert not got["cut"], f"{page.name}: printed lines run off the column: {got['cut'][:3]}"
        for f in got["figures"]:
            assert f["shown"] >= 0.9 * f["box"] or f["shown"] >= f["natural"] - 1, (page.name, f)
            assert f["shown"] >= 0.72 * f["natural"], (page.name, f, "text would be shown below 9 px")


@pytest.mark.notebooks
def test_reproduction_page_shows_the_verdicts_on_a_phone(site):
    """At 390 px (a phone) the summary's held column and every claim table's verdict column are on screen."""
    exe = chromium()
    if exe is None:
        pytest.skip("no Chromium on this machine (`apt-get install chromium`; .ci/run installs it)")
    got = layout(exe, site / "reproduction.html", 390, site)
    wanted = [h for h in got["headers"] if h["text"] in ("held", "verdict")]
    assert any(h["text"] == "held" for h in wanted) and any(h["text"] == "verdict" for h in wanted), got["headers"]
    for h in wanted:
        assert 0 <= h["left"] and h["right"] <= got["viewport"] + 1, (h, got["viewport"])
