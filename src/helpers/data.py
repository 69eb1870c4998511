"""One loading API for SynthRetina, the real datasets and a student's own data.

Every source becomes an :class:`ImageTable` (images + a labels table with a
``split`` column); :func:`dataloaders` turns a table into fastai
``DataLoaders`` with fundus-safe batch augmentations on the device, and
:func:`torch_dataset` into a plain torch ``Dataset``. Explained in chapter 0
("Fundus images and the SynthRetina world") and on the "Data and weights"
appendix page.

    table = helpers.data.load("synthretina", n=2000, size=64, seed=SEED)
    dls = helpers.data.dataloaders(table, target="dr_grade", bs=64, device=device)
    mine = helpers.data.load("my/labels.csv", image_col="file", label_col="dr_grade", patient_col="patient")
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from fastai.data.core import DataLoaders, TfmdDL
from fastai.data.transforms import IntToFloatTensor, Normalize

from .byo import from_csv, from_folder
from .datasets import REGISTRY, load_dataset
from .synthretina import synthretina_table
from .table import SPLITS, ImageTable, TableDataset
from .views import fundus_augmentations, stats


def batch_transforms(augment: bool, size: int | None = None, normalize: bool = True, modality: str = "fundus") -> list:
    """uint8 -> float, optional fundus augmentations, optional normalisation with ``modality``'s statistics
    (:func:`helpers.views.stats`; fastai batch transforms)."""
    tfms = [IntToFloatTensor()]
    if augment:
        tfms += fundus_augmentations(size or 0)
    if normalize:
        tfms.append(Normalize.from_stats(*stats(modality)))
    return tfms


def dataloaders(table: ImageTable, target=None, bs: int = 64, size: int | None = None,
                device=None, augment: bool = True, normalize: bool = True, num_workers: int = 0,
                seed: int | None = None, splits: tuple = ("train", "valid", "test"), inference: bool = False):
    """fastai ``DataLoaders`` over ``table``: train (augmented, shuffled), valid and test (when not empty).

    ``target`` is a label column, a list of columns (multi-label) or ``None``
    (unlabelled, e.g. for self-supervised pretraining). ``dls.train``,
    ``dls.valid`` and ``dls[2]`` (the test split) as in fastai. ``inference=True``
    keeps every split in order, whole and unaugmented (feature extraction).
    """
    dls = []
    for split in splits:
        ds = TableDataset(table, split, target, size)
        if len(ds) == 0:
            if split == "test":
                continue
            raise ValueError(f"{table.name}: split {split!r} is empty")
        train = split == "train" and not inference
        dls.append(TfmdDL(ds, bs=bs, shuffle=train, drop_last=train and len(ds) > bs,
                          after_batch=batch_transforms(augment and train, size, normalize, table.modality),
                          num_workers=num_workers, device=device))
    out = DataLoaders(*dls, device=device)
    if seed is not None:
        for dl in out.loaders:
            dl.rng.seed(seed)
    return out


def load(source, root=None, size: int | None = None, n_train: int | None = None,
         n_valid: int | None = None, n_test: int | None = None, seed: int = 0, **options) -> ImageTable:
    """Load any source as an :class:`ImageTable` — the one call every chapter uses.

    ``source`` is ``"synthretina"`` (generated here, see chapter 0), a name in
    the dataset registry (downloaded and prepared once, see the "Data and
    weights" page), or your own data: a CSV path (:func:`helpers.byo.from_csv`)
    or a folder with one sub-folder per class (:func:`helpers.byo.from_folder`),
    with their keyword options passed through. ``n_*`` cap each split
    (``None``: all of it; SynthRetina needs them), ``size`` is the image side in
    pixels. Registry label columns use the book's shared names (``dr_grade``,
    ``hr_grade``, ``glaucoma``, ...); your CSV keeps its own.
    """
    if source == "synthretina":
        return synthretina_table(n_train=n_train, n_valid=n_valid, n_test=n_test, size=size,
                                 seed=seed, root=root, **options)
    path = Path(str(source)).expanduser()
    if str(source) not in REGISTRY and (path.is_dir() or path.suffix.lower() == ".csv" or path.is_file()):
        read = from_folder if path.is_dir() else from_csv
        table = read(path, root=root, seed=seed, **({"size": size} if size else {}), **options)
        return _cap_splits(table, (n_train, n_valid, n_test), seed)
    return load_dataset(str(source), root=root, size=size, n_train=n_train, n_valid=n_valid,
                        n_test=n_test, seed=seed, **options)


def _cap_splits(table: ImageTable, caps, seed: int) -> ImageTable:
    """At most ``caps`` = (n_train, n_valid, n_test) rows of each split, drawn with ``seed``."""
    if all(c is None for c in caps):
        return table
    rng = np.random.default_rng(seed)
    keep = []
    for split, cap in zip(SPLITS, caps):
        idx = table.split_index(split)
        if cap is not None and cap < len(idx):
            idx = np.sort(rng.choice(idx, int(cap), replace=False))
        keep.append(idx)
    return table.take(np.concatenate(keep))
