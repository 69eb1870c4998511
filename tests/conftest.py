"""Shared fixtures: notebooks built on the fly, and an isolated cache for the kernels."""
from __future__ import annotations

import os
import sys

import nbformat
import pytest

TOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools")
sys.path.insert(0, TOOLS)  # the book's tooling (bookrunner, student_copies, fixture_hub) is not in the wheel


def make_notebook(path, cells, parameters: str | None = "PROFILE = None\nSEED = 0\n"):
    """Write a small notebook: an optional cell tagged `parameters`, then `cells` (code strings)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    if parameters is not None:
        cell = nbformat.v4.new_code_cell(parameters)
        cell.metadata["tags"] = ["parameters"]
        nb.cells.append(cell)
    nb.cells += [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, path)
    return path


@pytest.fixture(scope="session")
def isolated_env(tmp_path_factory):
    """RETINA_CACHE and RETINA_DATA in a temporary folder for every kernel the tests start."""
    base = tmp_path_factory.mktemp("retina-env")
    saved = {k: os.environ.get(k) for k in ("RETINA_CACHE", "RETINA_DATA", "RETINA_PROFILE")}
    os.environ["RETINA_CACHE"] = str(base / "cache")
    os.environ["RETINA_DATA"] = str(base / "data")
    os.environ.pop("RETINA_PROFILE", None)
    yield base
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v




@pytest.fixture(scope="session")
def real_hub(tmp_path_factory, isolated_env):
    """The fixture hub of tools/fixture_hub.py (faithful copies of the real sources, rehearsal-sized weights) on
    127.0.0.1. Yields the running :class:`Hub`; a test points itself and its kernels at it with
    ``with real_hub.environment():`` (HF_ENDPOINT, RETINA_HOST_OVERRIDE, an empty Hugging Face cache, no token:
    the gated RETFound repository needs one), so no other test sees the hub."""
    import sys
    sys.path.insert(0, TOOLS)
    import fixture_hub

    from helpers import profiles
    saved_arch = os.environ.get(profiles.ARCH_ENV)
    profiles.load("rehearsal")
    try:
        files = fixture_hub.build_fixtures(cache=tmp_path_factory.mktemp("fixtures"))
    finally:  # the test process itself keeps no architecture overrides
        os.environ.pop(profiles.ARCH_ENV, None) if saved_arch is None else os.environ.update(
            {profiles.ARCH_ENV: saved_arch})
    token_repos = {u.split("/resolve/")[0].removeprefix(fixture_hub.HF_BASE + "/"): "hf_rehearsal_token"
                   for u, e in fixture_hub.listed_urls().items() if e.get("gated")}
    hub = fixture_hub.Hub(files, tokens=token_repos)
    hub.hf_home = tmp_path_factory.mktemp("hf-home")
    with hub:  # the environment that points at it is applied per test: ``with real_hub.environment(): ...``
        yield hub
