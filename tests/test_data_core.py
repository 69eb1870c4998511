"""helpers.data: the ImageTable contract and the DataLoaders every chapter uses."""
import numpy as np
import pandas as pd
import pytest
import torch

from helpers.data import dataloaders
from helpers.table import ImageTable, torch_dataset
from helpers.views import fundus_augmentations


def table(n=40, size=16, **kw):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8)
    labels = pd.DataFrame({
        "dr_grade": rng.integers(0, 5, n),
        "a": rng.integers(0, 2, n), "b": rng.integers(0, 2, n),
        "split": (["train"] * (n // 2)) + (["valid"] * (n // 4)) + (["test"] * (n - n // 2 - n // 4)),
    })
    return ImageTable(images, labels, tasks={"dr_grade": "ordinal", "a": "multi", "b": "multi"},
                      classes={"dr_grade": ["0", "1", "2", "3", "4"]}, name="toy", **kw)


def test_bad_tables_fail_clearly():
    t = table()
    with pytest.raises(ValueError, match="'split' column"):
        ImageTable(t.images, t.labels.drop(columns="split"))
    bad = t.labels.copy()
    bad.loc[0, "split"] = "val"
    with pytest.raises(ValueError, match="unknown split"):
        ImageTable(t.images, bad)
    with pytest.raises(ValueError, match="40 label rows"):
        ImageTable(t.images[:10], t.labels)
    with pytest.raises(ValueError, match="unknown kind"):
        ImageTable(t.images, t.labels, tasks={"dr_grade": "regression"})
    with pytest.raises(ValueError, match="path"):
        ImageTable(None, t.labels)
    with pytest.raises(KeyError, match="no label column"):
        t.target("hr_grade")


def test_torch_dataset_items():
    t = table()
    ds = torch_dataset(t, "valid", "dr_grade")
    x, y = ds[0]
    assert x.dtype == torch.uint8 and x.shape == (3, 16, 16)
    assert int(y) == t.labels["dr_grade"].iloc[t.split_index("valid")[0]]
    assert len(ds) == 10
    xm, ym = torch_dataset(t, "train", ["a", "b"])[0]
    assert ym.dtype == torch.float32 and ym.shape == (2,)
    assert torch_dataset(t, "train", None, size=8)[0][0].shape == (3, 8, 8)


def test_dataloaders_normalise_and_augment_train_only():
    t = table()
    dls = dataloaders(t, "dr_grade", bs=8, size=16, device="cpu", seed=0)
    xb, yb = dls.train.one_batch()
    assert xb.shape == (8, 3, 16, 16) and xb.dtype == torch.float32
    assert yb.shape == (8,)
    xv, _ = dls.valid.one_batch()
    # validation batches are deterministic: no augmentation
    assert torch.equal(xv, dls.valid.one_batch()[0])
    with pytest.raises(ValueError, match="empty"):
        empty = table()
        empty.labels["split"] = "train"
        dataloaders(ImageTable(empty.images, empty.labels), None, bs=4, device="cpu")


def test_augmentations_keep_colour_ratios():
    """Brightness/contrast change all channels alike: a red lesion stays red (no hue shift)."""
    from fastai.torch_core import TensorImage
    from fastai.vision.augment import Brightness, Contrast
    img = torch.zeros(4, 3, 16, 16)
    img[:, 0] = 0.8  # red
    img[:, 1] = 0.2
    img[:, 2] = 0.1
    for tfm in (Brightness(max_lighting=0.15, p=1.0), Contrast(max_lighting=0.15, p=1.0)):
        out = tfm(TensorImage(img.clone()), split_idx=0)
        assert (out[:, 0] > out[:, 1]).all() and (out[:, 1] > out[:, 2]).all()
    names = [type(t).__name__ for t in fundus_augmentations(16)]
    assert not any("Hue" in n or "Saturation" in n for n in names)
