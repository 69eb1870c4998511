"""Shared fixtures: notebooks built on the fly, and an isolated cache for the kernels."""
from __future__ import annotations

import os

import nbformat
import pytest


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
