"""The one contract every image source meets: an :class:`ImageTable` (images + labels with a split).

SynthRetina, the registered real datasets and a student's own folder or CSV all
become an ``ImageTable``; :class:`TableDataset` serves one split of it to torch
and fastai. Explained in chapter 0 ("Fundus images and the SynthRetina world").
``ImageTable.fingerprint()`` hashes every image and label, so caches keyed on it
(features, checkpoints) cannot return another table's results.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from fastai.torch_core import TensorCategory, TensorImage, TensorMultiCategory
from PIL import Image

SPLITS = ("train", "valid", "test")
# The book's shared label names (SynthRetina, the real datasets and FLAIR's prompts use them).
DR_NAMES = ["no DR", "mild NPDR", "moderate NPDR", "severe NPDR", "proliferative DR"]
HR_NAMES = ["no HR", "grade 1 HR", "grade 2 HR", "grade 3 HR", "grade 4 HR"]
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
    modality: str = "fundus"   # which normalisation its images take (helpers.views.STATS): "fundus" or "oct"

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

    def take(self, rows) -> "ImageTable":
        """A new table with only the rows at positions ``rows`` (e.g. a label subset plus valid and test)."""
        rows = np.asarray(rows)
        return ImageTable(None if self.images is None else self.images[rows],
                          self.labels.iloc[rows].reset_index(drop=True), dict(self.tasks), dict(self.classes),
                          name=self.name, root=self.root, modality=self.modality)

    def fingerprint(self) -> str:
        """A hash of every image (bytes in memory, or file bytes on disk), every label and the task kinds.

        Keys the feature and checkpoint caches: change one pixel of one test
        image, or one label, and the key changes.
        """
        h = hashlib.sha256()
        h.update(pd.util.hash_pandas_object(self.labels, index=False).to_numpy().tobytes())
        h.update(repr(sorted(self.tasks.items())).encode())
        if self.images is not None:
            h.update(repr((self.images.shape, str(self.images.dtype))).encode())
            h.update(np.ascontiguousarray(self.images).data)
        else:
            for p in self.labels["path"]:
                path = Path(p) if self.root is None or Path(p).is_absolute() else self.root / p
                h.update(path.read_bytes())
        return h.hexdigest()[:16]

    def split_index(self, split: str) -> np.ndarray:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; splits: {SPLITS}")
        return np.flatnonzero(self.labels["split"].to_numpy() == split)

    def image(self, i: int, size: int | None = None) -> np.ndarray:
        """Image ``i`` as uint8 ``[H, W, 3]`` (resized to ``size`` when given)."""
        if self.images is not None:
            img = self.images[i]
        else:
            path = Path(self.labels["path"].iloc[i])
            if self.root is not None and not path.is_absolute():
                path = self.root / path
            with Image.open(path) as im:
                img = np.asarray(im.convert("RGB"))
        if size is not None and img.shape[0] != size:
            img = np.asarray(Image.fromarray(img).resize((size, size), Image.BICUBIC))
        return img

    def target(self, target: str | Sequence[str]) -> np.ndarray:
        """Targets for every row: int64 class ids; for several columns an int64 matrix (one task per
        column, chapter 1's multi-task fine-tuning) or, when the columns are ``multi`` labels, float32 0/1."""
        cols = [target] if isinstance(target, str) else list(target)
        missing = [c for c in cols if c not in self.labels.columns]
        if missing:
            raise KeyError(f"{self.name}: no label column {missing}; columns: {list(self.labels.columns)}")
        if len(cols) == 1 and self.tasks.get(cols[0], "single") != "multi":
            return self.labels[cols[0]].to_numpy().astype(np.int64)
        if all(self.tasks.get(c, "single") != "multi" for c in cols):
            return self.labels[cols].to_numpy().astype(np.int64)  # several tasks: one class id per column
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
        self.multi = self.targets.ndim == 2 and self.targets.dtype == np.float32

    def __len__(self):
        return len(self.index)

    def __getitem__(self, i):
        img = self.table.image(int(self.index[i]), self.size)
        x = TensorImage(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1))
        y = self.targets[i]
        if self.multi:
            y = TensorMultiCategory(torch.from_numpy(y))
        else:
            y = TensorCategory(torch.from_numpy(y) if np.ndim(y) else torch.tensor(int(y)))
        return x, y


def torch_dataset(table: ImageTable, split: str = "train", target=None, size: int | None = None) -> TableDataset:
    """A plain torch ``Dataset`` of one split (see :class:`TableDataset`)."""
    return TableDataset(table, split, target, size)
