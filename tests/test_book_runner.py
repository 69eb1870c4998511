"""The book runner (tools/bookrunner.py) on small notebooks made by the tests."""
import json
from pathlib import Path

import pytest

import bookrunner as book
from student_copies import strip_solutions, student_copy, write_student_copies

from conftest import make_notebook

REPORT_CELL = """
from helpers.report import RunReport
r = RunReport("t1", "Tiny", PROFILE, "cpu")
r.metric("answer", 42.0)
r.claim("it runs", paper="yes", ours=1.0, held=True)
r.publish()
"""


def test_refuses_a_notebook_without_parameters_cell(tmp_path, isolated_env):
    src = make_notebook(tmp_path / "nop.ipynb", ["x = 1"], parameters=None)
    with pytest.raises(book.NotebookError, match="parameters"):
        book.execute(src, tmp_path / "out" / "nop.ipynb", "smoke", progress=False)
    assert not (tmp_path / "out" / "nop.ipynb").exists()


def test_profile_is_injected_and_report_collected(tmp_path, isolated_env):
    src = make_notebook(tmp_path / "t1.ipynb", ["assert PROFILE == 'smoke', PROFILE", REPORT_CELL])
    run = book.execute(src, tmp_path / "out" / "t1.ipynb", "smoke", progress=False)
    assert run.error is None
    assert run.reports and run.reports[0]["metrics"] == {"answer": 42.0}
    assert run.reports[0]["profile"] == "smoke"
    # papermill's injected cell is gone from the executed copy: the page shows one parameters cell,
    # and the downloadable notebook keeps the chapter's own defaults
    import nbformat
    nb = nbformat.read(tmp_path / "out" / "t1.ipynb", as_version=4)
    assert not [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])][0].source.startswith("PROFILE = None")


def test_solutions_are_folded_on_the_site(tmp_path, isolated_env):
    import nbformat
    src = make_notebook(tmp_path / "t2.ipynb", ["# BEGIN SOLUTION\nx = 1\n# END SOLUTION\nprint(x)", "print(2)"])
    run = book.execute(src, tmp_path / "out" / "t2.ipynb", "smoke", progress=False)
    assert run.error is None
    cells = nbformat.read(run.executed, as_version=4).cells
    assert "hide-input" in cells[1].metadata.get("tags", []) and "hide-input" not in cells[2].metadata.get("tags", [])
    assert cells[1].outputs  # the result stays visible


@pytest.mark.parametrize("out", ["notebooks", "notebooks/", "./notebooks/../notebooks"])
def test_student_copies_never_overwrite_the_instructor_notebooks(capsys, monkeypatch, out):
    monkeypatch.chdir(book.REPO)
    before = {p: p.read_bytes() for p in book.discover()}
    assert book._main(["student-copies", "--out", out]) == 1
    assert "overwrite the solutions" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in book.discover()} == before


def test_student_copies_refuse_a_folder_holding_instructor_copies(tmp_path):
    src = make_notebook(tmp_path / "ch.ipynb", ["# BEGIN SOLUTION\nx = 1\n# END SOLUTION\n"])
    elsewhere = tmp_path / "copy"
    elsewhere.mkdir()
    (elsewhere / "ch.ipynb").write_bytes(src.read_bytes())
    with pytest.raises(ValueError, match="overwrite the solutions"):
        write_student_copies([src], elsewhere)
    assert (elsewhere / "ch.ipynb").read_bytes() == src.read_bytes()


def test_failing_notebook_fails_the_build_with_its_traceback(tmp_path, isolated_env, capsys):
    nb_dir = tmp_path / "nbs"
    nb_dir.mkdir()
    make_notebook(nb_dir / "a_ok.ipynb", [REPORT_CELL])
    make_notebook(nb_dir / "b_bad.ipynb", ["def f():\n    raise ValueError('boom 4242')\n", "f()"])
    runs = book.execute_all("smoke", tmp_path / "stage", nb_dir=nb_dir)
    bad = {r.name: r for r in runs}["b_bad"]
    assert bad.error and "ValueError" in bad.error and "boom 4242" in bad.error
    assert "f()" in bad.error  # the failing cell's traceback, not only the message
    assert {r.name: r for r in runs}["a_ok"].error is None
    report = book.report_dict(runs, "smoke")
    assert [c["status"] for c in report["chapters"]] == ["ok", "failed"]


def one_chapter_book(tmp_path, monkeypatch, name, cells):
    """A book with one chapter ``name`` (its notebook folder is returned); ``book.BOOK`` points at its sources."""
    nb_dir = tmp_path / "nbs"
    nb_dir.mkdir()
    make_notebook(nb_dir / f"{name}.ipynb", cells)
    src = tmp_path / "booksrc"
    src.mkdir()
    (src / "_toc.yml").write_text(f"root: intro\nchapters:\n- file: notebooks/{name}\n")
    (src / "reproduction.md").write_text("# R\n" + book.REPORT_MARKER + "\n")
    monkeypatch.setattr(book, "BOOK", src)
    return nb_dir


def test_build_raises_when_a_chapter_fails(tmp_path, isolated_env, monkeypatch, capsys):
    nb_dir = one_chapter_book(tmp_path, monkeypatch, "c_bad", ["1/0"])
    stage = tmp_path / "stage"
    (stage / "_build" / "html").mkdir(parents=True)
    (stage / "_build" / "html" / "index.html").write_text("the last good site")
    with pytest.raises(book.NotebookError, match="c_bad") as info:
        book.build("smoke", stage=stage, nb_dir=nb_dir, site=False)
    err = capsys.readouterr().err
    assert "ZeroDivisionError" in err
    assert "stage.failed" in str(info.value) and "unchanged" in str(info.value)
    # nothing lost: the previous build is untouched, the failed one is kept beside it with its report
    assert (stage / "_build" / "html" / "index.html").read_text() == "the last good site"
    report = json.loads((tmp_path / "stage.failed" / "report.json").read_text())
    assert report["chapters"][0]["status"] == "failed"
    assert not (tmp_path / "stage.next").exists()


def test_a_good_build_replaces_the_previous_one(tmp_path, isolated_env, monkeypatch, capsys):
    nb_dir = one_chapter_book(tmp_path, monkeypatch, "a_ok", [REPORT_CELL])
    stage = tmp_path / "stage"
    stage.mkdir()
    (stage / "old.txt").write_text("previous build")
    (tmp_path / "stage.failed").mkdir()  # an earlier failed build: superseded by this good one
    out = book.build("smoke", stage=stage, nb_dir=nb_dir, site=False)
    assert out["report"]["chapters"][0]["status"] == "ok"
    assert (stage / "notebooks" / "a_ok.ipynb").exists() and not (stage / "old.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["booksrc", "nbs", "stage"]  # no .next / .old left


def test_a_hung_cell_or_a_dead_kernel_fails_its_chapter_and_the_others_run(tmp_path, isolated_env):
    nb_dir = tmp_path / "nbs"
    nb_dir.mkdir()
    make_notebook(nb_dir / "a_hang.ipynb", ["import time\ntime.sleep(120)"])
    make_notebook(nb_dir / "b_dies.ipynb", ["import os\nos._exit(1)"])
    make_notebook(nb_dir / "c_ok.ipynb", [REPORT_CELL])
    runs = {r.name: r for r in book.execute_all("smoke", tmp_path / "stage", nb_dir=nb_dir, cell_timeout=4)}
    assert "RETINA_CELL_TIMEOUT" in runs["a_hang"].error and runs["a_hang"].seconds < 60
    assert "kernel died" in runs["b_dies"].error
    assert runs["c_ok"].error is None and runs["c_ok"].reports
    report = book.report_dict(list(runs.values()), "smoke")
    assert [c["status"] for c in report["chapters"]] == ["failed", "failed", "ok"]


def test_toc_must_list_every_notebook(tmp_path, monkeypatch):
    nb_dir = tmp_path / "nbs"
    nb_dir.mkdir()
    make_notebook(nb_dir / "zz_new.ipynb", ["1"])
    (tmp_path / "_toc.yml").write_text("root: intro\n")
    with pytest.raises(book.NotebookError, match="zz_new"):
        book.check_toc(tmp_path, nb_dir)


def test_unknown_profile_is_refused_before_running(tmp_path):
    with pytest.raises(ValueError, match="valid profiles"):
        book.execute_all("fast", tmp_path)


@pytest.fixture
def previous_build(tmp_path, monkeypatch):
    """A last good build under a temporary BUILD folder, to check that refused commands leave it alone."""
    monkeypatch.setattr(book, "BUILD", tmp_path / "_build")
    site = tmp_path / "_build" / "source" / "_build" / "html" / "index.html"
    site.parent.mkdir(parents=True)
    site.write_text("the last good site")
    for var in ("PROFILE", "RETINA_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    return site


@pytest.mark.parametrize("argv, env, expected", [
    (["build"], {"PROFILE": "bogus"}, "unknown profile 'bogus'"),
    (["build"], {"RETINA_PROFILE": "bogus"}, "unknown profile 'bogus'"),
    (["build", "--profile", "bogus"], {}, "unknown profile 'bogus'"),
    (["build"], {"PROFILE": "smoke", "RETINA_PROFILE": "cpu"}, "disagree"),
    (["execute", "--profile", "smoke", "--only", "01", "no-such-chapter"], {}, "--only no-such-chapter matches no"),
])
def test_bad_arguments_are_refused_before_anything_is_touched(previous_build, monkeypatch, capsys, argv, env, expected):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert book._main(argv) == 1
    err = capsys.readouterr().err
    assert expected in err and ("valid profiles" in err or "notebooks:" in err or "--profile" in err)
    assert previous_build.read_text() == "the last good site"
    assert sorted(p.name for p in previous_build.parents[3].iterdir()) == ["source"]


def test_profile_comes_from_the_flag_then_profile_then_retina_profile(monkeypatch):
    for var in ("PROFILE", "RETINA_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PROFILE", "smoke")
    assert book.requested_profile(None) == "smoke"
    assert book.requested_profile("cpu") == "cpu"
    monkeypatch.delenv("PROFILE")
    monkeypatch.setenv("RETINA_PROFILE", "smoke")
    assert book.requested_profile(None) == "smoke"


def test_kernels_keep_their_data_outside_the_build_tree(monkeypatch):
    monkeypatch.delenv("RETINA_DATA", raising=False)
    env = book.kernel_env()
    assert env["RETINA_DATA"] == str(book.REPO / "data")
    assert "_build" not in env["RETINA_DATA"]
    monkeypatch.setenv("RETINA_DATA", "/somewhere/else")
    assert book.kernel_env()["RETINA_DATA"] == "/somewhere/else"


def test_strip_solutions_keeps_indentation_and_parses():
    src = ("def f(x):\n    # BEGIN SOLUTION\n    y = x * 2\n    return y\n    # END SOLUTION\n"
           "\n# BEGIN SOLUTION\nanswer = f(2)\n# END SOLUTION\ncheck(answer)\n")
    out = strip_solutions(src)
    assert "x * 2" not in out and "answer = f(2)" not in out
    assert '    raise NotImplementedError' in out and "check(answer)" in out
    compile(out, "<student>", "exec")
    # a top-level answer becomes a stub per name it defines: the cell runs, the check reads None
    top = strip_solutions("# BEGIN SOLUTION\ndef g(x):\n    return x\na, (b, _) = 1, (2, 3)\n# END SOLUTION\nchk(a)\n")
    assert "def g(*args, **kwargs):" in top and "a = None" in top and "b = None" in top and "_ = None" not in top
    assert "reads g, a, b" in top
    env = {"chk": lambda v: v}
    exec(top, env)
    with pytest.raises(NotImplementedError, match="write g"):
        env["g"](1)
    with pytest.raises(ValueError, match="unbalanced"):
        strip_solutions("# BEGIN SOLUTION\nx = 1\n")


def test_student_copy_clears_outputs(tmp_path):
    import nbformat
    path = make_notebook(tmp_path / "s.ipynb", ["# BEGIN SOLUTION\nx = 1\n# END SOLUTION\nprint(x)"])
    nb = nbformat.read(path, as_version=4)
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="1\n")]
    copy = student_copy(nb)
    assert copy.cells[1].outputs == [] and "x = 1" not in copy.cells[1].source
    assert "x = 1" in nb.cells[1].source  # the instructor copy is untouched


def test_student_copies_of_the_discovered_chapters(tmp_path, monkeypatch, capsys):
    """``write_student_copies`` takes the paths ``book.discover`` found; the CLI wires the two together."""
    import ast
    import nbformat
    import student_copies
    nb_dir = tmp_path / "nbs"
    nb_dir.mkdir()
    make_notebook(nb_dir / "01_ch.ipynb", ["# BEGIN SOLUTION\nx = 1\n# END SOLUTION\nprint(x)"])
    make_notebook(nb_dir / "_draft.ipynb", ["1"])
    written = write_student_copies([nb_dir / "01_ch.ipynb"], tmp_path / "a")
    assert written == [tmp_path / "a" / "01_ch.ipynb"]
    monkeypatch.setattr(book, "NOTEBOOKS", nb_dir)
    assert book._main(["student-copies", "--out", str(tmp_path / "b")]) == 0
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["01_ch.ipynb"]  # _draft is not a chapter
    copy = nbformat.read(tmp_path / "b" / "01_ch.ipynb", as_version=4)
    assert "x = 1" not in copy.cells[1].source and "x = None" in copy.cells[1].source
    tree = ast.parse(open(student_copies.__file__).read())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "book" not in imported  # no circle book <-> student_copies


def test_instructors_page_quotes_the_builds_own_figures(tmp_path):
    from bookrunner import fill_chapter_markers
    from helpers.report import RunReport, decide
    rep = RunReport("01_simclr", "Chapter 1", "cpu", "cpu")
    rep.claim("probe gain", paper="+10", ours="+12.1 [+8, +16]", **decide(0.08, 0.16, 0.05),
              reference={"ours": "+20 [+18, +22]", **decide(0.18, 0.22, 0.05), "budget": "300 epochs"})
    ch = {**rep.to_dict(), "notebook_seconds": 589.0}
    page = tmp_path / "instructors.md"
    page.write_text("first run: <!-- TIME 01_simclr -->\n\n<!-- CLAIMS 01_simclr -->\n\n<!-- CLAIMS 02_dino -->\n")
    fill_chapter_markers(page, {"profile": "cpu", "chapters": [ch]})
    text = page.read_text()
    assert "first run: 9.8 min in this build (`cpu` profile, cpu)" in text
    assert "| ✓ held | probe gain | +12.1 [+8, +16] | +20 [+18, +22] (300 epochs): ✓ held |" in text
    assert "02_dino did not run in this build" in text and "<!--" not in text


def test_the_instructors_page_has_a_claims_marker_per_chapter():
    import re
    from bookrunner import CHAPTER_MARKER, discover
    text = (Path(__file__).resolve().parents[1] / "book" / "instructors.md").read_text()
    named = {m.group(2) for m in CHAPTER_MARKER.finditer(text) if m.group(1) == "CLAIMS"}
    assert named == {p.stem for p in discover()}
    assert not re.search(r"held in `cpu`\?", text), "hand-written claim tables go stale: use <!-- CLAIMS ... -->"
