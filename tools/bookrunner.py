"""The book runner: execute every chapter under a profile, gather the run report, build the site.

``make book`` calls ``python tools/bookrunner.py build --profile auto``; the tests
call the same functions in the ``smoke`` profile. Explained on the book's
"For contributors" page. Sources are never modified: executed copies go to
the build tree ``book/_build/source`` (a staged copy of ``book/`` with the
executed notebooks under ``notebooks/``) and the site to
``book/_build/source/_build/html``.

Commands::

    python tools/bookrunner.py build   [--profile P] [--only NAME ...]   # execute + report + site
    python tools/bookrunner.py execute [--profile P] [--only NAME ...]   # execute + report only
    python tools/bookrunner.py site                                       # site from what was executed
    python tools/bookrunner.py student-copies [--out DIR]                 # exercise stubs for students

One chapter is executed by ``tools/bookexec.py``, the report table is rendered by
:mod:`helpers.report`, the student copies are written by ``tools/student_copies.py``
(from the notebooks :func:`discover` finds).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from bookexec import ChapterRun, NotebookError, execute, parameters_cell_index  # noqa: F401 (tests read them here)
from student_copies import write_student_copies

from helpers import profiles, timings
from helpers.report import chapter_claims_markdown, report_markdown


def find_repo(start: Path | None = None) -> Path:
    """The book's repository: the nearest folder at or above ``start`` (default: this file's folder, then the
    working directory) holding ``notebooks/`` and ``book/_config.yml``; ``$RETINA_BOOK_REPO`` overrides it."""
    if os.environ.get("RETINA_BOOK_REPO"):
        return Path(os.environ["RETINA_BOOK_REPO"]).resolve()
    for base in ([Path(start)] if start else [Path(__file__).resolve().parent, Path.cwd()]):
        for folder in [base.resolve(), *base.resolve().parents]:
            if (folder / "notebooks").is_dir() and (folder / "book" / "_config.yml").is_file():
                return folder
    raise FileNotFoundError(f"no book repository (a folder with notebooks/ and book/_config.yml) at or above "
                            f"{start or Path(__file__).parent}; run from a clone or set RETINA_BOOK_REPO")


REPO = find_repo()
NOTEBOOKS = REPO / "notebooks"
STUDENT = NOTEBOOKS / "student"  # committed student copies (the Colab badges open these)
BOOK = REPO / "book"
BUILD = BOOK / "_build"
REPORT_MARKER = "<!-- RUN-REPORT -->"
TIMES_MARKER = "<!-- MEASURED-TIMES -->"  # how-to-run.md: the recorded chapter times (helpers.timings)


def discover(nb_dir: Path = NOTEBOOKS) -> list[Path]:
    """Every chapter notebook in ``nb_dir`` (sorted; files starting with ``_`` are skipped)."""
    return sorted(p for p in Path(nb_dir).glob("*.ipynb") if not p.name.startswith("_"))


def select(only: list[str] | None = None, nb_dir: Path = NOTEBOOKS) -> list[Path]:
    """The chapters whose name contains one of ``only`` (all when empty); every name must match one."""
    notebooks = discover(nb_dir)
    if not only:
        return notebooks
    unmatched = [o for o in only if not any(o in p.stem for p in notebooks)]
    if unmatched:
        raise NotebookError(f"--only {' '.join(unmatched)} matches no notebook; notebooks: "
                            f"{', '.join(p.stem for p in notebooks)}")
    return [p for p in notebooks if any(o in p.stem for o in only)]


def kernel_env() -> dict:
    """Pin the data and cache folders for the chapters' kernels before they start.

    Papermill runs each chapter inside the build tree, so a relative default (``./data``) would land under
    ``book/_build`` and vanish with the next build: unless ``RETINA_DATA`` is set, it becomes ``<repo>/data``.
    """
    os.environ.setdefault("RETINA_DATA", str(REPO / "data"))
    return {k: os.environ[k] for k in ("RETINA_DATA", "RETINA_CACHE") if k in os.environ}


def requested_profile(flag: str | None) -> str:
    """The profile from ``--profile``, else ``$PROFILE``, else ``$RETINA_PROFILE`` (``auto`` when none), validated.

    ``PROFILE`` and ``RETINA_PROFILE`` are read alike (``make book PROFILE=cpu`` and the notebooks' variable);
    when both are set and disagree without a flag, the runner refuses rather than guess.
    """
    env = {k: os.environ[k] for k in ("PROFILE", profiles.ENV_VAR) if os.environ.get(k)}
    if flag is None and len(set(env.values())) > 1:
        raise ValueError(f"PROFILE={env['PROFILE']} and {profiles.ENV_VAR}={env[profiles.ENV_VAR]} disagree: "
                         "unset one, or pass --profile")
    name = flag if flag is not None else next(iter(env.values()), "auto")
    return profiles.resolve(name)


def execute_all(profile: str, stage: Path, only: list[str] | None = None, seed: int | None = None,
                nb_dir: Path = NOTEBOOKS, cell_timeout: int | None = None) -> list[ChapterRun]:
    """Execute every chapter (or those whose name contains one of ``only``) into ``stage/notebooks``.

    ``cell_timeout`` (seconds; default ``$RETINA_CELL_TIMEOUT`` or one hour) fails a cell that hangs.
    """
    cell_timeout = cell_timeout or int(os.environ.get("RETINA_CELL_TIMEOUT", 3600))
    concrete = profiles.resolve(profile)
    runs = []
    notebooks = select(only, nb_dir)
    kernel_env()
    for nb_path in notebooks:
        print(f"[book] executing {nb_path.name} (profile {concrete})", flush=True)
        run = execute(nb_path, Path(stage) / "notebooks" / nb_path.name, concrete, seed=seed, timeout=cell_timeout)
        status = "FAILED" if run.error else "ok"
        print(f"[book] {nb_path.name}: {status} in {run.seconds:.1f} s", flush=True)
        runs.append(run)
    return runs


def report_dict(runs: list[ChapterRun], profile: str) -> dict:
    """The whole book's run report, chapter by chapter."""
    chapters = []
    for run in runs:
        recs = run.reports or [{"chapter": run.name, "title": run.name, "metrics": {}, "claims": []}]
        for rec in recs:
            rec = dict(rec)
            rec["notebook"] = run.source.name
            rec["notebook_seconds"] = round(run.seconds, 1)
            rec["status"] = "failed" if run.error else "ok"
            chapters.append(rec)
    return {"profile": profiles.resolve(profile), "chapters": chapters}


def stage_sources(stage: Path) -> None:
    """Copy ``book/`` (without its build tree) into ``stage``."""
    stage = Path(stage)
    stage.mkdir(parents=True, exist_ok=True)
    for item in BOOK.iterdir():
        if item.name == "_build":
            continue
        dest = stage / item.name
        if item.is_dir():
            shutil.copytree(item, dest, dirs_exist_ok=True)
        else:
            shutil.copy2(item, dest)


def write_report(report: dict, stage: Path) -> Path:
    """Write ``report.json`` and fill the Reproduction report page in ``stage``."""
    stage = Path(stage)
    (stage / "report.json").write_text(json.dumps(report, indent=2))
    page = stage / "reproduction.md"
    text = page.read_text()
    if REPORT_MARKER not in text:
        raise NotebookError(f"{page} lacks the marker {REPORT_MARKER}")
    page.write_text(text.replace(REPORT_MARKER, report_markdown(report)))
    fill_chapter_markers(stage / "instructors.md", report)
    how = stage / "how-to-run.md"
    if how.exists():
        how.write_text(how.read_text().replace(TIMES_MARKER, timings.markdown()))
    return stage / "report.json"


CHAPTER_MARKER = re.compile(r"<!-- (CLAIMS|TIME) ([0-9]{2}_[a-z0-9_]+) -->")


def fill_chapter_markers(page: Path, report: dict) -> None:
    """Fill ``<!-- CLAIMS 01_simclr -->`` (that chapter's claims, figures and verdicts) and ``<!-- TIME 01_simclr -->``
    (its measured wall time and machine) in ``page`` from this build's report, so the numbers a page quotes are
    the numbers this build measured. A marker naming a chapter this build did not run says so."""
    if not page.exists():
        return
    chapters = {ch["chapter"]: ch for ch in report["chapters"] if ch.get("chapter")}

    def fill(m):
        kind, name = m.group(1), m.group(2)
        ch = chapters.get(name)
        if ch is None or ch.get("status") == "failed":
            return f"*({name} did not run in this build: no figures to show)*"
        if kind == "TIME":
            secs = ch.get("notebook_seconds", ch.get("wall_time_s", 0))
            return f"{secs / 60:.1f} min in this build (`{ch.get('profile')}` profile, {ch.get('device')})"
        return chapter_claims_markdown(ch)
    page.write_text(CHAPTER_MARKER.sub(fill, page.read_text()))


def check_toc(stage: Path, nb_dir: Path = NOTEBOOKS) -> None:
    """Every chapter notebook must appear in ``_toc.yml`` (a clear error names the missing ones)."""
    toc = (Path(stage) / "_toc.yml").read_text()
    missing = [p.stem for p in discover(nb_dir) if f"notebooks/{p.stem}" not in toc]
    if missing:
        raise NotebookError(f"add these chapters to book/_toc.yml: {', '.join(missing)}")


def build_site(stage: Path, warnings_as_errors: bool = True) -> Path:
    """Build the HTML site from ``stage`` with Jupyter Book 1.x; returns the site folder."""
    exe = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(exe) if exe.exists() else "jupyter-book", "build", str(stage), "--keep-going"]
    if warnings_as_errors:
        cmd.append("-W")
    print("[book] " + " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stdout.write(proc.stdout[-20000:])
        sys.stderr.write(proc.stderr[-20000:])
        raise NotebookError(f"jupyter-book build failed (exit {proc.returncode}); see the output above")
    return Path(stage) / "_build" / "html"


def build(profile: str = "auto", only: list[str] | None = None, stage: Path | None = None,
          execute_notebooks: bool = True, site: bool = True, nb_dir: Path = NOTEBOOKS) -> dict:
    """Execute the chapters, write the run report, build the site. Raises if a chapter failed.

    Everything is checked first (profile, ``only``, the table of contents). The chapters then run in a fresh
    stage (``<stage>.next``) that replaces the previous build only when every chapter and the site succeeded: a
    failed build leaves the last good one in place and keeps its own stage as ``<stage>.failed`` (executed
    notebooks with the error in place, ``report.json`` with the failed chapters). A chapter that fails, times
    out or kills its kernel is recorded as failed and the others still run.
    """
    concrete = profiles.resolve(profile)
    stage = Path(stage or BUILD / "source")
    if not execute_notebooks:
        report = json.loads((stage / "report.json").read_text())
        write_report(report, stage)
        out = {"report": report, "stage": stage}
        if site:
            out["site"] = build_site(stage)
        return out
    select(only, nb_dir)
    work, failed_stage = stage.with_name(stage.name + ".next"), stage.with_name(stage.name + ".failed")
    if work.exists():
        shutil.rmtree(work)  # our own leftover from an interrupted build, never the last good one
    stage_sources(work)
    check_toc(work, nb_dir)
    runs = execute_all(concrete, work, only=only, nb_dir=nb_dir)
    report = report_dict(runs, concrete)
    (work / "report.json").write_text(json.dumps(report, indent=2))
    write_report(report, work)
    failed = [r for r in runs if r.error]
    for r in failed:
        print(f"\n[book] {r.source.name} FAILED\n{r.error}\n", file=sys.stderr)
    try:
        if failed:
            raise NotebookError(f"{len(failed)} notebook(s) failed: {', '.join(r.source.name for r in failed)}")
        html = build_site(work) if site else None
    except NotebookError as exc:
        if failed_stage.exists():
            shutil.rmtree(failed_stage)
        work.rename(failed_stage)
        kept = f"; the previous build in {stage} is unchanged" if stage.exists() else ""
        raise NotebookError(f"{exc}. This build is kept in {failed_stage} (report.json lists each chapter)"
                            f"{kept}") from None
    _swap_in(work, stage)
    if failed_stage.exists():
        shutil.rmtree(failed_stage)  # an earlier failed build, now superseded
    out = {"report": report, "stage": stage}
    if html is not None:
        out["site"] = stage / "_build" / "html"
        print(f"[book] site: {out['site'] / 'index.html'}")
    return out


def _swap_in(new: Path, stage: Path) -> None:
    """Put the finished build ``new`` in place of ``stage``; the old one is removed only once ``new`` is there."""
    old = stage.with_name(stage.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if stage.exists():
        stage.rename(old)
    new.rename(stage)
    if old.exists():
        shutil.rmtree(old)


def _main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/bookrunner.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("build", "execute"):
        p = sub.add_parser(name)
        p.add_argument("--profile", default=None, help=f"one of {', '.join(profiles.VALID_NAMES)} "
                       "(default: $PROFILE, else $RETINA_PROFILE, else auto)")
        p.add_argument("--only", nargs="*", help="run only notebooks whose name contains one of these")
    sub.add_parser("site")
    sc = sub.add_parser("student-copies")
    sc.add_argument("--out", default=str(STUDENT),
                    help="default: notebooks/student, the committed copies the chapters' Colab badges open")
    args = parser.parse_args(argv)
    try:
        if args.cmd in ("build", "execute"):
            build(requested_profile(args.profile), only=args.only, site=args.cmd == "build")
        elif args.cmd == "site":
            build(execute_notebooks=False)
        elif args.cmd == "student-copies":
            for path in write_student_copies(discover(NOTEBOOKS), Path(args.out)):
                print(path)
    except (NotebookError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {exc}. The build writes under {BUILD} and the chapters' data under $RETINA_DATA "
              f"(now {os.environ.get('RETINA_DATA', 'unset: <repo>/data')}) and caches under $RETINA_CACHE: "
              "point them at writable folders", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main())
