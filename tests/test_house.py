"""The house rules of src/helpers (shared/HOUSE.md): no import cycles, and no helper that nothing uses.

Every public name must be used by a chapter notebook, a data script, a book
page, or another helpers module (which is itself there for a chapter) — the
cheap equivalent of d2l's traceability from library back to text.
"""
import ast
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "helpers"
# Public names written ahead of the chapter that uses them; each says which one. Keep this short.
AWAITING = {}  # public name -> the issue whose chapter will use it (empty: every helper is used)


def modules():
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def imports_of(name, path):
    """helpers modules imported by ``name`` anywhere in its file (lazy imports inside functions too)."""
    tree = ast.parse(path.read_text())
    pkg = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = pkg[: len(pkg) - (node.level - 1)] if node.level else []
            mod = base + (node.module.split(".") if node.module else [])
            if not node.level and (not mod or mod[0] != "helpers"):
                continue
            target = ".".join(mod)
            for alias in node.names:  # `from . import x` imports the module helpers.x
                sub = f"{target}.{alias.name}"
                out.add(sub if (PKG.parent / sub.replace(".", "/")).with_suffix(".py").exists()
                        or (PKG.parent / sub.replace(".", "/")).is_dir() else target)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("helpers.")}
    return {m for m in out if m != name and m != "helpers"}


def test_the_import_graph_has_no_cycle():
    graph = {name: imports_of(name, path) for name, path in modules()}
    state, cycles = {}, []

    def visit(n, stack):
        state[n] = "open"
        for m in graph.get(n, ()):
            if state.get(m) == "open":
                cycles.append(stack[stack.index(m):] + [m] if m in stack else [n, m])
            elif m not in state:
                visit(m, stack + [m])
        state[n] = "done"
    for n in graph:
        if n not in state:
            visit(n, [n])
    assert not cycles, f"import cycles among helpers modules: {cycles}"
    assert graph, "no module found"


def public_names(path):
    tree = ast.parse(path.read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
            names.add(node.name)
    return names


def corpus():
    texts = []
    for nb in (ROOT / "notebooks").glob("*.ipynb"):
        texts += ["".join(c["source"]) for c in json.loads(nb.read_text())["cells"]]
    texts += [p.read_text() for p in (ROOT / "data_scripts").glob("*.py")]
    texts += [p.read_text() for p in (ROOT / "tools").glob("*.py")]  # the book runner and the student-copy tool
    texts += [p.read_text() for p in (ROOT / "book").glob("*.md")]
    return "\n".join(texts)


def test_every_public_helper_is_used_by_a_chapter_a_script_a_page_or_another_helper():
    outside = corpus()
    sources = {name: path.read_text() for name, path in modules()}
    unused = []
    for name, path in modules():
        for fn in public_names(path):
            pat = re.compile(rf"\b{re.escape(fn)}\b")
            used_inside = any(pat.search(src) for m, src in sources.items() if m != name) \
                or len(pat.findall(sources[name])) > 1
            if not (pat.search(outside) or used_inside) and fn not in AWAITING:
                unused.append(f"{name}.{fn}")
    assert not unused, f"public helpers no chapter, script, page or helper uses: {unused}"
    missing = [n for n in AWAITING if not any(n in public_names(p) for _, p in modules())]
    assert not missing, f"AWAITING lists names that no longer exist: {missing}"


def test_the_house_test_sees_a_cycle_and_an_unused_name(tmp_path):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("from .b import g\ndef f():\n    return g()\n")
    b.write_text("def g():\n    from .a import f\n    return 1\n\ndef lonely():\n    pass\n")
    assert imports_of("helpers.a", a) == {"helpers.b"} and imports_of("helpers.b", b) == {"helpers.a"}
    assert public_names(b) == {"g", "lonely"}


MAX_LINES = 400  # issue 28: a module longer than this is split by what it holds
MAX_LOCAL_IMPORTS = 10  # issue 28: imports inside functions, each with its reason on the line


def code_files():
    """The wheel's modules and the repository's tooling: what a contributor reads."""
    return sorted(PKG.rglob("*.py")) + sorted((ROOT / "tools").glob("*.py"))


def local_imports(path):
    """``(line number, source line)`` of every import written inside a function of ``path``."""
    source = path.read_text()
    lines = source.splitlines()
    out = []
    for fn in ast.walk(ast.parse(source)):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out += [(n.lineno, lines[n.lineno - 1]) for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom))]
    return sorted(set(out))


def test_no_module_is_longer_than_the_house_allows():
    long = {str(p.relative_to(ROOT)): n for p in code_files() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by what they hold): {long}"


def test_few_imports_inside_functions_each_with_its_reason():
    found = {f"{p.relative_to(ROOT)}:{n}": line.strip() for p in sorted(PKG.rglob("*.py")) for n, line in local_imports(p)}
    assert len(found) <= MAX_LOCAL_IMPORTS, f"{len(found)} imports inside functions (at most {MAX_LOCAL_IMPORTS}): {found}"
    unexplained = {k: v for k, v in found.items() if "#" not in v}
    assert not unexplained, f"an import inside a function says why on its line: {unexplained}"


def test_the_size_rules_see_a_long_module_and_a_silent_local_import(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import os\n\ndef g():\n    import json\n    from x import y  # optional: reason\n    return 1\n")
    assert local_imports(f) == [(4, "    import json"), (5, "    from x import y  # optional: reason")]
    assert [line for _, line in local_imports(f) if "#" not in line] == ["    import json"]
