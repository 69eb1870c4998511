"""One loading API for SynthRetina, the real datasets and a student's own data.

Every source becomes an :class:`ImageTable` (images + a labels table with a
``split`` column); :func:`dataloaders` turns a table into fastai
``DataLoaders`` with fundus-safe batch augmentations on the device, and
:func:`torch_dataset` into a plain torch ``Dataset``. Explained in chapter 0
("Fundus images and the SynthRetina world") and on the "Data and weights"
appendix page.

    table = helpers.data.load("synthretina", n=2000, size=64, seed=SEED)
    dls = helpers.data.dataloaders(table, target="dr_grade", bs=64, device=device)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

SPLITS = ("train", "valid", "test")
TASK_KINDS = ("single", "ordinal", "multi")


@dataclass
class ImageTable:
    """Images plus one row of labels per image.

    ``images`` is a uint8 array ``[N, H, W, 3]`` held in memory, or ``None``
    when ``labels`` has a ``path`` column (images read from disk on demand).
    ``labels`` always has a ``split`` column (train / valid / test). ``tasks``
    maps a label column to its kind (``single``, ``ordinal`` or ``multi``) and
    ``classes`` maps it to its class names (index = label value).
    """
    images: np.ndarray | None
    labels: pd.DataFrame
    tasks: dict = field(default_factory=dict)
    classes: dict = field(default_factory=dict)
    name: str = "table"
    root: Path | None = None

    def __post_init__(self):
        if "split" not in self.labels.columns:
            raise ValueError(f"{self.name}: the labels table needs a 'split' column (train/valid/test)")
        bad = set(self.labels["split"].unique()) - set(SPLITS)
        if bad:
            raise ValueError(f"{self.name}: unknown split names {sorted(bad)}; use {SPLITS}")
        if self.images is None and "path" not in self.labels.columns:
            raise ValueError(f"{self.name}: give images in memory or a 'path' column")
        if self.images is not None and len(self.images) != len(self.labels):
            raise ValueError(f"{self.name}: {len(self.images)} images but {len(self.labels)} label rows")
        for col, kind in self.tasks.items():
            if kind not in TASK_KINDS:
                raise ValueError(f"{self.name}: task {col!r} has unknown kind {kind!r}; kinds: {TASK_KINDS}")

    def __len__(self):
        return len(self.labels)

    def split_index(self, split: str) -> np.ndarray:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; splits: {SPLITS}")
        return np.flatnonzero(self.labels["split"].to_numpy() == split)

    def image(self, i: int, size: int | None = None) -> np.ndarray:
        """Image ``i`` as uint8 ``[H, W, 3]`` (resized to ``size`` when given)."""
        if self.images is not None:
            img = self.images[i]
        else:
            from PIL import Image
            path = Path(self.labels["path"].iloc[i])
            if self.root is not None and not path.is_absolute():
                path = self.root / path
            with Image.open(path) as im:
                img = np.asarray(im.convert("RGB"))
        if size is not None and img.shape[0] != size:
            from PIL import Image
            img = np.asarray(Image.fromarray(img).resize((size, size), Image.BICUBIC))
        return img

    def target(self, target: str | Sequence[str]) -> np.ndarray:
        """Targets for every row: int64 class ids, or float32 0/1 columns for several labels."""
        cols = [target] if isinstance(target, str) else list(target)
        missing = [c for c in cols if c not in self.labels.columns]
        if missing:
            raise KeyError(f"{self.name}: no label column {missing}; columns: {list(self.labels.columns)}")
        if len(cols) == 1 and self.tasks.get(cols[0], "single") != "multi":
            return self.labels[cols[0]].to_numpy().astype(np.int64)
        return self.labels[cols].to_numpy().astype(np.float32)

    def n_classes(self, target: str | Sequence[str]) -> int:
        if not isinstance(target, str):
            return len(target)
        if target in self.classes:
            return len(self.classes[target])
        return int(self.labels[target].max()) + 1


class TableDataset(torch.utils.data.Dataset):
    """A torch ``Dataset`` over one split of an :class:`ImageTable`.

    Items are ``(image, target)``: image uint8 ``[3, H, W]`` (fastai's
    ``TensorImage``), target a class id (``TensorCategory``) or a float
    multi-label vector (``TensorMultiCategory``).
    """

    def __init__(self, table: ImageTable, split: str, target: str | Sequence[str] | None, size: int | None = None):
        self.table, self.split, self.size = table, split, size
        self.index = table.split_index(split)
        self.targets = table.target(target)[self.index] if target is not None else np.zeros(len(self.index), np.int64)
        self.multi = self.targets.ndim == 2

    def __len__(self):
        return len(self.index)

    def __getitem__(self, i):
        from fastai.torch_core import TensorCategory, TensorImage, TensorMultiCategory
        img = self.table.image(int(self.index[i]), self.size)
        x = TensorImage(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1))
        y = self.targets[i]
        y = TensorMultiCategory(torch.from_numpy(y)) if self.multi else TensorCategory(torch.tensor(int(y)))
        return x, y


def torch_dataset(table: ImageTable, split: str = "train", target=None, size: int | None = None) -> TableDataset:
    """A plain torch ``Dataset`` of one split (see :class:`TableDataset`)."""
    return TableDataset(table, split, target, size)


FUNDUS_MEAN = (0.5, 0.3, 0.2)
FUNDUS_STD = (0.3, 0.2, 0.15)


def fundus_augmentations(size: int, strength: float = 1.0) -> list:
    """Batch augmentations that keep a fundus diagnosis: flips, rotations, mild brightness/contrast.

    No hue or saturation shifts (they change a lesion's colour: an exudate's
    yellow, a haemorrhage's red) and no strong crops (they can cut a lesion
    away). They run on whole batches on the device; shown with a figure in
    chapter 0.
    """
    from fastai.vision.augment import Brightness, Contrast, Dihedral, Rotate
    return [
        Dihedral(p=0.5 * strength),
        Rotate(max_deg=20 * strength, p=0.75, pad_mode="zeros"),
        Brightness(max_lighting=0.15 * strength, p=0.75),
        Contrast(max_lighting=0.15 * strength, p=0.75),
    ]


def batch_transforms(augment: bool, size: int | None = None, normalize: bool = True) -> list:
    """uint8 -> float, optional fundus augmentations, optional normalisation (fastai batch transforms)."""
    from fastai.data.transforms import IntToFloatTensor, Normalize
    tfms = [IntToFloatTensor()]
    if augment:
        tfms += fundus_augmentations(size or 0)
    if normalize:
        tfms.append(Normalize.from_stats(FUNDUS_MEAN, FUNDUS_STD))
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
    from fastai.data.core import DataLoaders, TfmdDL
    dls = []
    for split in splits:
        ds = TableDataset(table, split, target, size)
        if len(ds) == 0:
            if split == "test":
                continue
            raise ValueError(f"{table.name}: split {split!r} is empty")
        train = split == "train" and not inference
        dls.append(TfmdDL(ds, bs=bs, shuffle=train, drop_last=train and len(ds) > bs,
                          after_batch=batch_transforms(augment and train, size, normalize),
                          num_workers=num_workers, device=device))
    out = DataLoaders(*dls, device=device)
    if seed is not None:
        for dl in out.loaders:
            dl.rng.seed(seed)
    return out


def load(source: str, root=None, size: int | None = None, n_train: int | None = None,
         n_valid: int | None = None, n_test: int | None = None, seed: int = 0, **options) -> ImageTable:
    """Load any source as an :class:`ImageTable` — the one call every chapter uses.

    ``source`` is ``"synthretina"`` (generated here, see chapter 0) or a name in
    the dataset registry (downloaded and prepared once, see the "Data and
    weights" page). ``n_*`` cap each split (``None``: all of it; SynthRetina
    needs them), ``size`` is the image side in pixels. Label columns use the
    book's shared names (``dr_grade``, ``hr_grade``, ``glaucoma``, ...).
    """
    if source == "synthretina":
        from .synthretina import synthretina_table
        return synthretina_table(n_train=n_train, n_valid=n_valid, n_test=n_test, size=size,
                                 seed=seed, root=root, **options)
    from .datasets import load_dataset
    return load_dataset(source, root=root, size=size, n_train=n_train, n_valid=n_valid,
                        n_test=n_test, seed=seed, **options)
