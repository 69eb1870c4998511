"""Student copies of the chapters: solutions replaced by stubs. Explained on the "For instructors" page.

In a chapter notebook (the instructor copy) each exercise's answer sits between
two marker lines inside a code cell::

    def nt_xent(z1, z2, temperature):
        # BEGIN SOLUTION
        ...the answer...
        # END SOLUTION

``python tools/bookrunner.py student-copies`` writes copies in which every output
is cleared and every such block becomes a stub:

- inside a function, ``raise NotImplementedError("exercise: write your answer here")``
  at the block's indentation — the chapter's check reports it as not attempted;
- at the top level of a cell, one line per name the answer defines: a function
  that raises ``NotImplementedError``, a variable set to ``None`` — so the cell
  runs, the check after it says "not attempted yet" and names what it reads, and
  the chapter goes on to the next exercise.
"""
from __future__ import annotations

import ast
import copy
import re
import textwrap
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
        if indent:
            return f'{indent}raise NotImplementedError("exercise: write your answer here")\n'
        return _top_level_stub(match.group(0))
    return _BLOCK.sub(stub, source)


def _top_level_stub(block: str) -> str:
    """Stubs for the names a top-level solution block defines (functions raise, variables are None)."""
    body = "\n".join(line for line in block.splitlines() if BEGIN not in line and END not in line)
    functions, variables = [], []
    for node in ast.parse(textwrap.dedent(body)).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            functions.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                for n in ast.walk(t):
                    if isinstance(n, ast.Name) and n.id not in variables and n.id != "_":
                        variables.append(n.id)
    names = functions + [v for v in variables if v not in functions]
    lines = [f"# exercise: write your answer here; the check below reads {', '.join(names) or 'your answer'}"]
    for f in functions:
        lines += [f"def {f}(*args, **kwargs):", f'    raise NotImplementedError("exercise: write {f}")']
    lines += [f"{v} = None" for v in variables if v not in functions]
    return "\n".join(lines) + "\n"


def student_copy(nb):
    """A copy of notebook ``nb`` (nbformat) with solutions stubbed and outputs cleared."""
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source = strip_solutions(cell.source)
            cell.outputs = []
            cell.execution_count = None
    return nb


def write_student_copies(paths, out_dir: Path) -> list[Path]:
    """Write a student copy of each notebook in ``paths`` to ``out_dir``; returns the paths written.

    ``python tools/bookrunner.py student-copies`` passes the chapters that
    ``bookrunner.discover`` finds.
    """
    import nbformat
    out_dir, paths = Path(out_dir), [Path(p) for p in paths]
    clash = [p.name for p in paths if (out_dir / p.name).resolve() == p.resolve()
             or ((out_dir / p.name).exists() and "# BEGIN SOLUTION" in (out_dir / p.name).read_text())]
    if clash:
        raise ValueError(f"{out_dir} holds the instructor notebooks ({', '.join(clash)}): the copies would "
                         "overwrite the solutions; choose another folder (default: notebooks/student)")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        dest = out_dir / path.name
        nbformat.write(student_copy(nb), dest)
        written.append(dest)
    return written
