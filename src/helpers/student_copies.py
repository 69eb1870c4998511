"""Student copies of the chapters: solutions replaced by stubs. Explained on the "For instructors" page.

In a chapter notebook (the instructor copy) each exercise's answer sits between
two marker lines inside a code cell::

    def nt_xent(z1, z2, temperature):
        # BEGIN SOLUTION
        ...the answer...
        # END SOLUTION

``python -m helpers.book student-copies`` writes copies in which every such
block becomes ``raise NotImplementedError("exercise: write your answer here")``
at the block's indentation, and every output is cleared.
"""
from __future__ import annotations

import re
from pathlib import Path

BEGIN = "# BEGIN SOLUTION"
END = "# END SOLUTION"
_BLOCK = re.compile(r"^([ \t]*)# BEGIN SOLUTION[^\n]*\n.*?^[ \t]*# END SOLUTION[^\n]*(\n|$)", re.S | re.M)


def strip_solutions(source: str) -> str:
    """Replace every solution block in ``source`` by a stub at the block's indentation."""
    if source.count(BEGIN) != source.count(END):
        raise ValueError(f"unbalanced solution markers ({source.count(BEGIN)} BEGIN, {source.count(END)} END)")

    def stub(match):
        indent = match.group(1)
        return f'{indent}raise NotImplementedError("exercise: write your answer here")\n'
    return _BLOCK.sub(stub, source)


def student_copy(nb):
    """A copy of notebook ``nb`` (nbformat) with solutions stubbed and outputs cleared."""
    import copy
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source = strip_solutions(cell.source)
            cell.outputs = []
            cell.execution_count = None
    return nb


def write_student_copies(paths, out_dir: Path) -> list[Path]:
    """Write a student copy of each notebook in ``paths`` to ``out_dir``; returns the paths written.

    ``python -m helpers.book student-copies`` passes the chapters that
    :func:`helpers.book.discover` finds.
    """
    import nbformat
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in map(Path, paths):
        nb = nbformat.read(path, as_version=4)
        dest = out_dir / path.name
        nbformat.write(student_copy(nb), dest)
        written.append(dest)
    return written
