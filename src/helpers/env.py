"""Where a chapter runs: device, seeds, the folders for data and caches, and safe writes into them.

Every chapter's setup cell calls these (explained in "How to run this book").
No function here hard-codes a device: CUDA, then Apple MPS, then the CPU.
"""
from __future__ import annotations

import os
import random
import shutil
import uuid
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock

DATA_ENV = "RETINA_DATA"
CACHE_ENV = "RETINA_CACHE"


def get_device(prefer: str | None = None) -> torch.device:
    """The best device here: CUDA, then Apple MPS, then CPU (``prefer`` overrides)."""
    if prefer:
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> int:
    """Seed Python, NumPy and torch (all devices) from the parameters cell's ``SEED``."""
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    return seed


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Folder for datasets: ``root`` if given, else ``$RETINA_DATA``, else ``./data``."""
    return Path(root or os.environ.get(DATA_ENV) or "data").expanduser()


def cache_dir(*parts: str) -> Path:
    """Folder for weights, features and checkpoints: ``$RETINA_CACHE`` or ``~/.cache/retina-book``.

    Sub-folders named by ``parts`` are created on demand.
    """
    base = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "retina-book").expanduser()
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def describe_device(device: torch.device) -> str:
    """A one-line description of ``device`` for the run report."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return device.type


def atomic_write(path: Path, write) -> Path:
    """Call ``write(tmp_path)`` on a unique temporary name beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_folder(folder: Path, write, replace: bool = False) -> Path:
    """Call ``write(tmp)`` on a uniquely named temporary folder beside ``folder``, then rename it into place.

    Hold :func:`lock` of ``folder`` around it when processes may race. An existing ``folder`` is refused
    (``FileExistsError``), or with ``replace=True`` moved aside only once its replacement is complete.
    """
    folder = Path(folder)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp, old = folder.with_name(f".{folder.name}.{tag}.partial"), folder.with_name(f".{folder.name}.{tag}.old")
    try:
        tmp.mkdir(parents=True)
        write(tmp)
        if folder.exists():
            if not replace:
                raise FileExistsError(f"{folder} already exists")
            os.rename(folder, old)
            try:
                os.rename(tmp, folder)
            except OSError:
                os.rename(old, folder)  # put the finished folder back
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def lock(path: Path):
    """A cross-process lock for the cache entry ``path`` (a ``.lock`` file beside it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path.with_name(f".{path.name}.lock")))
