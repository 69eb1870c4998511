"""Colab as it is (tools/colab-constraints.txt, Colab's published pip freeze): the book's requirements accept every
version Colab ships, the install cell pins what is installed so pip can only add packages, and a chapter's rehearsal
runs with Colab's versions of the packages the book uses (torch and the Jupyter kernel stay this machine's)."""
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import types
from importlib import metadata
from pathlib import Path

import nbformat
import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import bookrunner as book

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "tools" / "colab-constraints.txt"
# Not overlaid: the CUDA builds of torch (a CPU machine keeps its own), and the kernel and widget machinery (Colab's
# kernel and front end are Colab's; papermill talks to this machine's kernel).
KEEP_OURS = re.compile(r"^(torch|torchvision|torchaudio|triton|nvidia-.*|cuda-.*|ipykernel|ipython|jupyter-.*|"
                       r"jupyter-client|jupyter-core|traitlets|tornado|pyzmq|debugpy|comm|nbformat|nbclient|"
                       r"matplotlib-inline|prompt-toolkit|pygments|ipywidgets|widgetsnbextension|jupyterlab-widgets|comm|"
                       r"setuptools|pip|wheel)$")


def colab_pins() -> dict:
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.strip().partition("==")
            pins[canonicalize_name(name)] = version
    return pins


def book_requirements() -> list[Requirement]:
    return [Requirement(r) for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]]


def test_the_constraints_say_where_they_come_from_and_hold_plain_pins():
    head = CONSTRAINTS.read_text().split("\n\n")[0]
    assert "googlecolab/backend-info" in head and "pip-freeze.gpu.txt" in head and re.search(r"20\d\d-\d\d-\d\d", head)
    pins = colab_pins()
    assert {"torch", "fastai", "timm", "transformers", "ipykernel", "numpy", "pandas"} <= set(pins)
    assert all(re.fullmatch(r"[0-9][0-9A-Za-z.]*", v) for v in pins.values()), "a pin that pip cannot resolve"


def test_the_books_requirements_accept_every_version_colab_ships():
    pins = colab_pins()
    refused = {str(r): pins[canonicalize_name(r.name)] for r in book_requirements()
               if canonicalize_name(r.name) in pins and not r.specifier.contains(pins[canonicalize_name(r.name)],
                                                                                   prereleases=True)}
    assert not refused, f"installing the book on Colab would change Colab's {refused}"


def _install_cell(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    return next(c.source for c in nb.cells if c.cell_type == "code" and "google.colab" in c.source)


def test_every_chapter_has_the_same_install_cell():
    cells = {p.name: _install_cell(p) for p in book.discover()}
    assert len(set(cells.values())) == 1, sorted(cells)


def test_the_install_cell_pins_what_is_installed_so_pip_changes_nothing(tmp_path, monkeypatch):
    """The cell run as on Colab (a stand-in ``google.colab`` and ``subprocess.run``); then the pip command it built
    is run for real, as a dry run against this machine's packages: every requirement of the book is met as it is
    installed — no upgrade, no reinstall of torch."""
    calls = []
    freeze = subprocess.run([sys.executable, "-m", "pip", "freeze"], capture_output=True, text=True, check=True).stdout

    def fake_run(cmd, **kw):
        calls.append(cmd)
        return types.SimpleNamespace(stdout=freeze if "freeze" in cmd else "", returncode=0)

    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(subprocess, "run", fake_run)
    source = _install_cell(book.discover()[0]).replace("/tmp/colab-pins.txt", str(tmp_path / "pins.txt"))
    exec(compile(source, "install-cell", "exec"), {"__name__": "__cell__"})
    monkeypatch.undo()
    install = next(c for c in calls if "install" in c)
    assert "-c" in install and not {"-U", "--upgrade", "--force-reinstall"} & set(install)
    pins = (tmp_path / "pins.txt").read_text().splitlines()
    assert any(p.startswith("torch==") for p in pins) and all("==" in p for p in pins)
    target = next(a for a in install if "retina-fm-book @ git+" in a)
    # the book's own requirements in its place (nothing to build offline): with the pins, pip finds every one met
    cmd = [a for a in install if a != target] + ["--dry-run", "--no-index", "--report", str(tmp_path / "report.json"),
                                                 *map(str, book_requirements())]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    would = [i["metadata"]["name"] for i in json.loads((tmp_path / "report.json").read_text())["install"]]
    assert would == [], f"pip would install or change {would}"


def _distributions(paths: list[str]) -> dict:
    """``{name: distribution}`` as an import would find them on ``paths`` (the first one wins)."""
    out = {}
    for d in metadata.distributions(path=paths):
        out.setdefault(canonicalize_name(d.metadata["Name"]), d)
    return out


def _closure(dists: dict) -> set:
    """The packages the book's requirements reach through ``dists`` (markers evaluated, extras not followed)."""
    env = default_environment()
    seen, todo = set(), [canonicalize_name(r.name) for r in book_requirements()]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for r in map(Requirement, (dists[name].requires or []) if name in dists else []):
            if r.marker is None or r.marker.evaluate({**env, "extra": ""}):
                todo.append(canonicalize_name(r.name))
    return seen


def _pip_target(folder: Path, pins: dict) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--only-binary=:all:",
                           "--target", str(folder), *(f"{n}=={v}" for n, v in pins.items())],
                          capture_output=True, text=True)
    assert done.returncode == 0, f"Colab's versions could not be installed here:\n{done.stderr[-3000:]}"


def _overlay(pins: dict):
    """Colab's versions of the packages the book's requirements reach, where they differ from this machine's,
    installed without dependencies into a folder that goes first on the kernel's path, plus what those versions
    need that this machine lacks (python-dateutil 2.9 needs six); built once per constraints file. Returns the
    folder, what it holds, the distributions as the kernel sees them and the book's closure among them."""
    ours = _distributions(sys.path)
    wanted = {n: pins[n] for n in sorted(_closure(ours)) if n in pins and not KEEP_OURS.match(n)
              and ours[n].version != pins[n]}
    key = hashlib.sha1(json.dumps(wanted, sort_keys=True).encode() + sys.version.encode()).hexdigest()[:12]
    folder = Path(sys.prefix) / "colab-overlay" / key
    if not (folder / ".complete").exists():
        tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        _pip_target(tmp, wanted)
        for _ in range(3):
            dists = _distributions([str(tmp), *sys.path])
            missing = {n: pins[n] for n in sorted(_closure(dists)) if n not in dists and n in pins
                       and not KEEP_OURS.match(n)}
            if not missing:
                break
            _pip_target(tmp, missing)
        (tmp / ".complete").write_text(json.dumps(sorted(_distributions([str(tmp)]))))
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    dists = _distributions([str(folder), *sys.path])
    held = {n: dists[n].version for n in _distributions([str(folder)])}
    return folder, held, dists, _closure(dists)


@pytest.mark.notebooks
def test_a_chapter_rehearses_with_colabs_versions(real_hub, tmp_path, monkeypatch):
    pins = colab_pins()
    overlay, wanted, dists, closure = _overlay(pins)
    assert {"numpy", "pandas", "fastai", "transformers", "huggingface-hub", "timm"} <= set(wanted)
    assert all(pins.get(n) == v for n, v in wanted.items()), {n: (v, pins.get(n)) for n, v in wanted.items()}
    # the overlaid set is consistent: every requirement of every package the book reaches is met on that path
    # (except those of this machine's kernel machinery, which on Colab is Colab's own)
    env = default_environment()
    unmet = []
    for name in sorted(n for n in closure if not KEEP_OURS.match(n)):
        for r in map(Requirement, (dists[name].requires or []) if name in dists else []):
            dep = dists.get(canonicalize_name(r.name))
            if (r.marker is None or r.marker.evaluate({**env, "extra": ""})) and (
                    dep is None or not r.specifier.contains(dep.version, prereleases=True)):
                unmet.append(f"{name} needs {r}, has {dep.version if dep else None}")
    assert not unmet, unmet
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(overlay), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    probe = subprocess.run([sys.executable, "-c", "import json, importlib.metadata as m; print(json.dumps("
                            f"{{n: m.version(n) for n in {sorted(wanted)!r}}}))"], capture_output=True, text=True)
    assert json.loads(probe.stdout) == wanted, probe.stderr[-2000:]
    monkeypatch.setenv("RETINA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RETINA_DATA", str(tmp_path / "data"))
    for stem in ("05_flair", "03_mae"):
        source = next(p for p in book.discover() if p.stem == stem)
        with real_hub.environment(hf_home=tmp_path / "hf"):
            run = book.execute(source, tmp_path / source.name, "rehearsal", timeout=300, progress=False)
        assert run.error is None, f"{stem} with Colab's versions:\n{run.error}"
