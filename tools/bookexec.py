"""Executing one chapter for the book: papermill under a profile, the failing cell's traceback, the run reports.

``tools/bookrunner.py`` runs every chapter with :func:`execute` and builds the site from what it returns.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from helpers.report import METADATA_KEY


class NotebookError(RuntimeError):
    """A notebook that cannot be run by the book (no parameters cell, failing cell...)."""


@dataclass
class ChapterRun:
    """One executed notebook: where it went, how long it took, what it recorded."""
    name: str
    source: Path
    executed: Path
    seconds: float = 0.0
    error: str | None = None
    reports: list = field(default_factory=list)


def parameters_cell_index(nb) -> int:
    """Index of the cell tagged ``parameters``; a clear error when there is none.

    Without one, papermill appends the injected values at the top and the
    notebook's own assignments silently overwrite them, so the book refuses.
    """
    for i, cell in enumerate(nb.cells):
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            return i
    raise NotebookError("no cell tagged 'parameters': add the tag to the cell that sets PROFILE and SEED "
                        "(otherwise the profile chosen by the runner would be silently overwritten)")


def _failure_text(exc) -> str:
    """The failing cell's error and traceback, as plain text."""
    ansi = re.compile(r"\x1b\[[0-9;]*m")
    parts = [f"{getattr(exc, 'ename', type(exc).__name__)}: {getattr(exc, 'evalue', exc)}"]
    tb = getattr(exc, "traceback", None)
    if tb:
        parts.append(ansi.sub("", "\n".join(tb)))
    cell = getattr(exc, "cell_index", None)
    if cell is not None:
        parts.insert(0, f"failing cell: #{cell}")
    return "\n".join(parts)


def execute(source: Path, executed: Path, profile: str, seed: int | None = None,
            timeout: int | None = None, progress: bool = True) -> ChapterRun:
    """Execute one notebook with papermill under ``profile`` into ``executed``.

    Returns a :class:`ChapterRun`; a failing cell is reported in ``error`` with
    its traceback (the executed copy, with the error in place, is kept).
    """
    import nbformat
    import papermill as pm

    source, executed = Path(source), Path(executed)
    run = ChapterRun(source.stem, source, executed)
    nb = nbformat.read(source, as_version=4)
    try:
        parameters_cell_index(nb)
    except NotebookError as exc:
        raise NotebookError(f"{source.name}: {exc}") from None
    params = {"PROFILE": profile}
    if seed is not None:
        params["SEED"] = int(seed)
    executed.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    try:
        pm.execute_notebook(str(source), str(executed), parameters=params, kernel_name="python3", language="python",
                            progress_bar=progress, cwd=str(executed.parent),
                            execution_timeout=timeout)
    except pm.PapermillExecutionError as exc:
        run.error = _failure_text(exc)
    except (CellTimeoutError, TimeoutError) as exc:
        run.error = (f"a cell ran longer than the cell timeout ({timeout} s) and was stopped: {exc}. Raise it with "
                     "RETINA_CELL_TIMEOUT=<seconds>, or run a smaller profile")
    except DeadKernelError as exc:
        run.error = (f"the kernel died ({exc}); usually out of memory: run a smaller profile, or close other "
                     "programs, then run the chapter again")
    run.seconds = time.perf_counter() - start
    if executed.exists():
        tidy_executed(executed)
        run.reports = collect_reports(executed)
    return run


def tidy_executed(executed: Path) -> None:
    """Prepare an executed notebook for the site.

    Papermill's injected-parameters cell is removed (the site would show a
    second parameters cell, and the downloadable notebook would keep the
    runner's ``PROFILE``; the setup cell prints the profile a run used), and
    every cell holding an exercise's solution is tagged ``hide-input``, so the
    page shows the check's result with the solution folded away.
    """
    import nbformat
    nb = nbformat.read(executed, as_version=4)
    nb.cells = [c for c in nb.cells if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    for c in nb.cells:
        if c.cell_type == "code" and "# BEGIN SOLUTION" in c.source:
            tags = c.metadata.setdefault("tags", [])
            if "hide-input" not in tags:
                tags.append("hide-input")
    nbformat.write(nb, executed)


def collect_reports(executed: Path) -> list[dict]:
    """The run-report records a notebook published (see :mod:`helpers.report`)."""
    import nbformat
    nb = nbformat.read(executed, as_version=4)
    found = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            rec = out.get("metadata", {}).get(METADATA_KEY)
            if rec:
                found.append(rec)
    return found
