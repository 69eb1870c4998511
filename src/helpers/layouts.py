"""How each registered archive is laid out, and how its images and labels are read (book appendix "Data and
weights"): a MedMNIST ``.npz``, a zip of class folders, or a zip of images with label CSVs.
:func:`helpers.datasets.prepare` calls the reader of an entry's ``layout``; ``d`` is its ``DatasetInfo``."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from .byo import IMAGE_EXT, DatasetError, read_images, split_by_group


def prepare_medmnist(d, path: Path, size: int):
    try:
        arrays = np.load(path, allow_pickle=False)
        parts = {s: (arrays[f"{k}_images"], arrays[f"{k}_labels"]) for s, k in
                 (("train", "train"), ("valid", "val"), ("test", "test"))}
    except (KeyError, ValueError, zipfile.BadZipFile, OSError) as exc:
        raise DatasetError(f"{path} is not a readable MedMNIST npz ({exc}); delete it and download again") from None
    images, rows = [], []
    col = d.options["label"]
    for split, (imgs, labs) in parts.items():
        if imgs.ndim == 3:
            imgs = np.repeat(imgs[..., None], 3, -1)
        if imgs.shape[1] != size:
            imgs = np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BICUBIC)) for im in imgs])
        images.append(imgs.astype(np.uint8))
        rows.append(pd.DataFrame({col: labs.reshape(len(labs), -1)[:, 0].astype(int), "split": split}))
    labels = pd.concat(rows, ignore_index=True)
    return np.concatenate(images), labels, [], len(labels)


def _read_or_refuse(d, sources, names, size):
    imgs, kept, bad = read_images(sources, names, size)
    if imgs is None:
        raise DatasetError(f"{d.name}: no readable image in the archive; "
                           + ", ".join(f"{n} ({r})" for n, r in bad[:5]))
    return imgs, kept, bad


def prepare_folders_zip(d, zf, size, seed):
    members = [m for m in zf.namelist() if m.lower().endswith(IMAGE_EXT) and "__MACOSX" not in m]
    if not members:
        raise DatasetError(f"{d.name}: the archive holds no images")
    classes = sorted({Path(m).parent.name for m in members})
    imgs, kept, bad = _read_or_refuse(d, [lambda m=m: zf.read(m) for m in members], members, size)
    labels = pd.DataFrame({d.options["label"]: [classes.index(Path(members[i]).parent.name) for i in kept],
                           "file": [members[i] for i in kept]})
    labels["split"] = split_by_group(labels["file"], seed)
    return imgs, labels, bad, len(members)


def _eye_grades(d, table: pd.DataFrame, where: str) -> tuple[pd.Series, list]:
    """Each row's grade from its own eye's column (DeepDRiD's ``image_id`` is ``<patient>_<l|r><shot>``), and the
    rows without one (``(image_id, reason)``)."""
    o = d.options
    grades, missing = [], []
    for iid, row in zip(table[o["id_col"]].astype(str), table.to_dict("records")):
        eye = iid.rpartition("_")[2][:1].lower()
        col = o["eye_cols"].get(eye)
        value = row.get(col) if col else None
        if value is None or pd.isna(value):
            missing.append((iid, f"no {col or 'eye'} grade in {where}"))
            grades.append(None)
        else:
            grades.append(int(value))
    return pd.Series(grades, index=table.index, dtype="object"), missing


def prepare_csv_zip(d, zf, size, seed):
    o = d.options
    by_base = {Path(m).name.lower(): m for m in zf.namelist()}
    csvs = [by_base[g.lower()] for g in o["csvs"] if g.lower() in by_base]
    if not csvs:
        raise DatasetError(f"{d.name}: none of the label CSVs {', '.join(o['csvs'])} is in the archive")
    parts, skipped = [], []
    for member in csvs:
        table = pd.read_csv(io.BytesIO(zf.read(member)))
        need = [o["image_col"], o["id_col"], o["patient_col"], o["patient_label_col"], *o["eye_cols"].values()]
        for col in need:
            if col not in table.columns:
                raise DatasetError(f"{d.name}: column {col!r} missing from {member}; columns: {list(table.columns)}")
        table["dr_grade"], missing = _eye_grades(d, table, member)
        skipped += missing
        table["source_csv"] = Path(member).name
        parts.append(table[table["dr_grade"].notna()])
    table = pd.concat(parts, ignore_index=True)
    by_name = {Path(m).name: m for m in zf.namelist() if m.lower().endswith(IMAGE_EXT)}
    wanted = [Path(str(p).replace("\\", "/")).name for p in table[o["image_col"]]]
    present = [i for i, m in enumerate(wanted) if m in by_name]
    absent = [(wanted[i], "not in the archive") for i in range(len(wanted)) if wanted[i] not in by_name]
    imgs, kept, bad = _read_or_refuse(d, [lambda m=by_name[wanted[i]]: zf.read(m) for i in present],
                                      [by_name[wanted[i]] for i in present], size)
    rows = table.iloc[[present[k] for k in kept]].reset_index(drop=True)
    labels = pd.DataFrame({"dr_grade": rows["dr_grade"].astype(int),
                           "patient_dr_grade": rows[o["patient_label_col"]].astype(int),
                           "patient_id": rows[o["patient_col"]], "image_id": rows[o["id_col"]].astype(str),
                           "source_csv": rows["source_csv"]})
    labels["split"] = split_by_group(labels["patient_id"], seed)
    return imgs, labels, skipped + absent + bad, len(table) + len(skipped)
