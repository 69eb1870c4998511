"""SynthRetina: a procedural world of colour fundus photographs with known ground truth.

Explained in chapter 0, "Fundus images and the SynthRetina world". Every image
is drawn from its labels: first the grades are sampled (so prevalence and
balance are under control), then findings consistent with them, then the
picture; the grades written to the labels table are derived back from the drawn
findings by the rules below, and the tests check that both agree.

Anatomy: circular field of view (FOV) on black; orange-red fundus, darker toward
the macula, darker fovea 2.5 disc diameters temporal to the disc; yellow-orange
disc (1/7 of the FOV diameter) with a paler cup; arcades of arteries (narrower,
lighter) and veins (wider, darker) arching above and below the macula and
branching. Right eyes (OD) have the disc on the image's right, left eyes (OS)
are mirror images.

Grading rules (SynthRetina's own simplification of the clinical scales):

=====  ===========================================  ===========================================
grade  diabetic retinopathy (ICDR-like)             hypertensive retinopathy (Keith-Wagener-Barker-like)
=====  ===========================================  ===========================================
0      no DR lesion                                 normal arterioles, nothing else
1      microaneurysms only                          generalised arteriolar narrowing
2      dot/blot haemorrhages (< 10) or exudates     narrowing + arteriovenous nicking
3      >= 10 dot/blot haemorrhages, no new vessels  + flame haemorrhages or cotton-wool spots
4      neovascularisation                           + swollen disc (papilloedema)
=====  ===========================================  ===========================================

glaucoma = cup-to-disc ratio >= 0.6; amd = 5 or more drusen; normal = DR 0,
HR 0, no glaucoma, no AMD. DR lesions are microaneurysms, dot/blot
haemorrhages, hard exudates and neovascularisation; HR lesions are narrowing,
nicking, flame haemorrhages, cotton-wool spots and disc swelling (in real eyes
cotton-wool spots also occur in severe DR: here they count for HR only).

quality = "good" when blur < 1 px (at 128 px) and illumination within
[0.8, 1.15]; "usable" when blur < 1.8 px; otherwise "poor".

The package: :mod:`~helpers.synthretina.world` holds the sites and cameras, the
configuration, these rules, the findings and the reports;
:mod:`~helpers.synthretina.render` draws the picture; this module samples,
generates and caches whole datasets.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from ..env import atomic_folder, atomic_write, cache_dir, data_root, lock
from ..table import DR_NAMES, HR_NAMES, ImageTable
from .render import MASKED
from .render import render as _render  # the name `render` stays the submodule
from .world import (
    DEFAULT_SITES,
    FINDINGS,
    Camera,
    Config,
    compose_report,
    derive_labels,
    dr_grade_rule,
    hr_grade_rule,
    make_config,
    sample_findings,
)

__all__ = ["sample", "generate", "synthretina_table", "save_dataset", "load_folder", "make_config", "Config",
           "Camera", "DEFAULT_SITES", "TASKS", "CLASSES", "FINDINGS", "MASKED", "dr_grade_rule", "hr_grade_rule",
           "compose_report", "DR_NAMES", "HR_NAMES"]

MIN_SIZE, MAX_SIZE = 32, 512
SPLIT_IDS = {"train": 0, "valid": 1, "test": 2}


def _check_size(size) -> int:
    if not isinstance(size, (int, np.integer)) or not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"size must be an integer from {MIN_SIZE} to {MAX_SIZE} px, got {size!r}")
    return int(size)


# --------------------------------------------------------------------------- datasets

def sample(index: int, seed: int = 0, size: int = 128, cfg: Config | None = None, split: str = "train",
           masks: bool = False, overrides: dict | None = None):
    """One image, its labels and (optionally) lesion masks — deterministic in (seed, split, index).

    ``overrides`` replaces sampled findings before drawing (the chapter-0 explorer uses it).
    """
    cfg = cfg or Config()
    size = _check_size(size)
    rng = np.random.default_rng([int(seed), SPLIT_IDS[split], int(index)])
    f = sample_findings(rng, cfg)
    for key, value in (overrides or {}).items():
        if key not in f:
            raise ValueError(f"unknown finding {key!r}; findings: {', '.join(sorted(f))}")
        f[key] = value
    lab = derive_labels(f)
    camera = next((c for c in cfg.sites if c.name == lab["site"]), None)
    if camera is None:
        raise ValueError(f"unknown site {lab['site']!r}; sites: {', '.join(c.name for c in cfg.sites)}")
    draw_rng = np.random.default_rng([int(seed), SPLIT_IDS[split], int(index), 1])
    img, m = _render(lab, size, draw_rng, camera, masks)
    lab["report"] = compose_report(lab, np.random.default_rng([int(seed), SPLIT_IDS[split], int(index), 2]))
    lab["index"] = int(index)
    return img, lab, m


def generate(n: int, seed: int = 0, size: int = 128, cfg: Config | None = None, split: str = "train",
             progress: bool = False):
    """``n`` images ``[n, size, size, 3]`` (uint8) and their labels table."""
    if n is None or int(n) < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    imgs = np.zeros((int(n), size, size, 3), np.uint8)
    rows = []
    for i in tqdm(range(int(n)), desc=f"SynthRetina {split}", disable=not progress, leave=False):
        imgs[i], lab, _ = sample(i, seed, size, cfg, split)
        rows.append(lab)
    return imgs, pd.DataFrame(rows)


TASKS = {"dr_grade": "ordinal", "hr_grade": "ordinal", "glaucoma": "single", "amd": "single",
         "normal": "single", "quality": "single"}
CLASSES = {"dr_grade": DR_NAMES, "hr_grade": HR_NAMES, "glaucoma": ["no", "yes"], "amd": ["no", "yes"],
           "normal": ["no", "yes"]}


def synthretina_table(n_train=None, n_valid=None, n_test=None, size=None, seed: int = 0, root=None,
                      cache: bool = False, prevalence=None, balanced: bool = False, site_correlation: float = 0.0,
                      progress: bool = True) -> ImageTable:
    """SynthRetina as an :class:`~helpers.data.ImageTable` (what ``helpers.data.load("synthretina")`` returns).

    In memory, generated once per machine and kept under ``$RETINA_CACHE/synthretina`` (keyed by the
    configuration, the seed, the sizes and a hash of SynthRetina's source), so every chapter after the first
    reads it back in seconds; with ``cache=True`` the images and ``labels.csv`` are instead
    written once to ``<root>/synthretina-<key>/`` (the layout of a real
    dataset) and read back from there on later calls. ``site`` becomes an
    integer column ``site_id`` too, so it can serve as a target.
    """
    size = _check_size(128 if size is None else size)
    ns = {"train": n_train, "valid": n_valid, "test": n_test}
    for k, v in ns.items():
        if v is None or int(v) < 0:
            raise ValueError(f"SynthRetina needs n_{k} (a non-negative integer), got {v!r}")
    cfg = make_config(prevalence, balanced, site_correlation)
    if cache:
        folder = data_root(root) / f"synthretina-{cfg.key()}-s{seed}-{size}px-{n_train}-{n_valid}-{n_test}"
        if not (folder / "labels.csv").exists():
            save_dataset(folder, cfg, seed, size, ns, progress)
        return load_folder(folder)
    path = cache_dir("synthretina") / f"{cfg.key()}-{_source_key()}-s{seed}-{size}px-{n_train}-{n_valid}-{n_test}.npz"
    with lock(path):  # generated once per machine, then read back by every chapter (seconds instead of minutes)
        if path.exists():
            images, labels = _read_arrays(path)
        else:
            imgs, tabs = [], []
            for split, n in ns.items():
                im, lab = generate(int(n), seed, size, cfg, split, progress)
                lab["split"] = split
                imgs.append(im)
                tabs.append(lab)
            images, labels = np.concatenate(imgs), pd.concat(tabs, ignore_index=True)
            atomic_write(path, lambda tmp: _write_arrays(tmp, images, labels))
    return _table(images, labels, cfg)


def _source_key() -> str:
    """A hash of SynthRetina's own source files: changing the world or the renderer invalidates the cache."""
    h = hashlib.sha256()
    for f in sorted(Path(__file__).parent.glob("*.py")):
        h.update(f.read_bytes())
    return h.hexdigest()[:8]


def _write_arrays(path: Path, images: np.ndarray, labels: pd.DataFrame) -> None:
    """Images and every label column in one ``.npz`` (no pickles: text columns as fixed-width unicode)."""
    cols = {f"label:{c}": (labels[c].to_numpy(dtype=str) if labels[c].dtype.kind not in "biuf"
                           else labels[c].to_numpy()) for c in labels.columns}
    with open(path, "wb") as f:
        np.savez(f, images=images, columns=np.array(list(labels.columns), dtype=str), **cols)


def _read_arrays(path: Path):
    with np.load(path, allow_pickle=False) as z:
        labels = pd.DataFrame({c: (pd.Series(z[f"label:{c}"], dtype="str") if z[f"label:{c}"].dtype.kind == "U"
                                   else z[f"label:{c}"]) for c in z["columns"]})
        return z["images"], labels


def _table(images, labels, cfg) -> ImageTable:
    names = [c.name for c in cfg.sites]
    labels["site_id"] = labels["site"].map({n: i for i, n in enumerate(names)}).astype(int)
    classes = dict(CLASSES, site_id=names)
    return ImageTable(images, labels, tasks=dict(TASKS, site_id="single"), classes=classes, name="synthretina")


def save_dataset(folder: Path, cfg: Config, seed: int, size: int, ns: dict, progress: bool = True) -> Path:
    """Write images (PNG) and ``labels.csv`` like a real dataset, safe across processes.

    Under a lock, through :func:`helpers.env.atomic_folder`; a ``folder`` that another process finished
    meanwhile is used as it is.
    """


    def write(tmp: Path) -> None:
        (tmp / "images").mkdir()
        rows = []
        for split, n in ns.items():
            im, lab = generate(int(n), seed, size, cfg, split, progress)
            lab["split"] = split
            lab["path"] = [f"images/{split}_{i:06d}.png" for i in range(len(lab))]
            for arr, p in zip(im, lab["path"]):
                Image.fromarray(arr).save(tmp / p)
            rows.append(lab)
        pd.concat(rows, ignore_index=True).to_csv(tmp / "labels.csv", index=False)
        (tmp / "config.json").write_text(json.dumps({"key": cfg.key(), "seed": seed, "size": size, "n": ns}))

    folder = Path(folder)
    with lock(folder):
        if (folder / "labels.csv").exists():
            return folder  # another process wrote it while we waited
        if folder.exists():
            raise FileExistsError(f"{folder} exists but holds no labels.csv (not written by the book?): "
                                  "move it away, or pass another root=")
        return atomic_folder(folder, write)


def load_folder(folder: Path) -> ImageTable:
    """Read a SynthRetina folder written by :func:`save_dataset` into memory."""
    folder = Path(folder)
    labels = pd.read_csv(folder / "labels.csv")
    images = np.stack([np.asarray(Image.open(folder / p).convert("RGB")) for p in labels["path"]])
    return _table(images, labels, Config())
