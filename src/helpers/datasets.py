"""Real datasets: a registry, a resumable checksum-verified download, a one-time preparation, and
bring-your-own data (a folder per class, or a CSV).

Explained on the "Data and weights" appendix page. ``helpers.data.load(name)``
calls :func:`load_dataset`; the command-line scripts in ``data_scripts/`` call
:func:`download` and :func:`prepare`.

Files are fetched by :func:`helpers.downloads.fetch` (resumable, checksum-verified;
``RETINA_DATA_MIRROR`` redirects them to a mirror). Nothing outside
``<root>/<name>/`` is ever written or deleted.
"""
from __future__ import annotations

import io
import shutil
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .downloads import fetch, md5sum, mirror_url
from .env import data_root
from .table import DR_NAMES, ImageTable


class DatasetError(RuntimeError):
    """A dataset problem (unknown name, not downloaded, unreadable files) with a message that says what to do.

    Transfer problems are :class:`helpers.downloads.DownloadError` instead.
    """


@dataclass(frozen=True)
class RemoteFile:
    name: str
    url: str
    md5: str | None = None      # None: not published; the download is not verified (said on the page)
    size: int = 0               # px side for MedMNIST files (0: the original 28 px)


@dataclass(frozen=True)
class DatasetInfo:
    """One registry entry: what the data are, where they come from, under which licence."""
    name: str
    task: str
    labels: dict               # column -> kind ("single", "ordinal", "multi")
    classes: dict              # column -> class names
    n_images: int
    size_on_disk: str
    files: tuple
    licence: str
    citation: str
    layout: str                # "medmnist" | "folders-zip" | "csv-zip" | "manual"
    notes: str = ""
    options: dict = field(default_factory=dict)


_ZENODO_MEDMNIST = "https://zenodo.org/records/10519652/files/{}?download=1"
MEDMNIST_CITE = ("Yang J. et al., MedMNIST v2 — a large-scale lightweight benchmark for 2D and 3D biomedical "
                 "image classification, Scientific Data 10, 41 (2023)")

REGISTRY: dict[str, DatasetInfo] = {
    "retinamnist": DatasetInfo(
        "retinamnist", "diabetic retinopathy grade 0-4 (from DeepDRiD), colour fundus",
        {"dr_grade": "ordinal"}, {"dr_grade": DR_NAMES}, 1600, "3-60 MB (28-224 px)",
        (RemoteFile("retinamnist.npz", _ZENODO_MEDMNIST.format("retinamnist.npz"), "bd4c0672f1bba3e3a89f0e4e876791e4", 0),
         RemoteFile("retinamnist_64.npz", _ZENODO_MEDMNIST.format("retinamnist_64.npz"), "afda852cc34dcda56f86ad2b2457dbcc", 64),
         RemoteFile("retinamnist_128.npz", _ZENODO_MEDMNIST.format("retinamnist_128.npz"), "e48e916a24454daf90583d4e6efb1a18", 128),
         RemoteFile("retinamnist_224.npz", _ZENODO_MEDMNIST.format("retinamnist_224.npz"), "eae7e3b6f3fcbda4ae613ebdcbe35348", 224)),
        "CC BY 4.0", MEDMNIST_CITE, "medmnist", "fixed split 1080 / 120 / 400", {"label": "dr_grade"}),
    "octmnist": DatasetInfo(
        "octmnist", "OCT B-scan class: CNV / DME / drusen / normal",
        {"oct_class": "single"}, {"oct_class": ["CNV", "DME", "drusen", "normal"]}, 109309, "0.2-1 GB (64-128 px)",
        (RemoteFile("octmnist_64.npz", _ZENODO_MEDMNIST.format("octmnist_64.npz"), "e229e9440236b774d9f0dfef9d07bdaf", 64),
         RemoteFile("octmnist_128.npz", _ZENODO_MEDMNIST.format("octmnist_128.npz"), "0a97e76651ace45c5d943ee3f65b63ae", 128)),
        "CC BY 4.0", MEDMNIST_CITE, "medmnist", "grey images, stacked to 3 channels", {"label": "oct_class"}),
    "deepdrid": DatasetInfo(
        "deepdrid", "diabetic retinopathy grade 0-4 and image quality, 2,000 regular fundus images",
        {"dr_grade": "ordinal"}, {"dr_grade": DR_NAMES}, 2000, "1.37 GB",
        (RemoteFile("DeepDRiD.zip", "https://zenodo.org/records/8248825/files/DeepDRiD.zip?download=1",
                    "3379e2fd7a2dd398545a67148420a5d3"),),
        "CC BY-SA 4.0",
        "Liu R. et al., DeepDRiD: Diabetic Retinopathy — Grading and Image Quality Estimation Challenge, Patterns 3(6) (2022)",
        "csv-zip", "split by patient; the archive's file name on Zenodo is not verified here",
        {"csv_glob": "*regular*fundus*training*.csv", "image_col": "image_path", "label_col": "patient_DR_Level",
         "patient_col": "patient_id"}),
    "jsiec": DatasetInfo(
        "jsiec", "39 fundus conditions (JSIEC 1000 images), one folder per class",
        {"jsiec_class": "single"}, {}, 1000, "~300 MB",
        (RemoteFile("1000images.zip", "https://zenodo.org/records/3477553/files/1000images.zip?download=1", None),),
        "CC BY 4.0 (Zenodo record 3477553)",
        "Cen L.-P. et al., Automatic detection of 39 fundus diseases and conditions in retinal photographs using "
        "deep neural networks, Nature Communications 12, 4828 (2021)",
        "folders-zip", "no checksum is published: the download is size-checked only", {"label": "jsiec_class"}),
    "papila": DatasetInfo(
        "papila", "glaucoma status: healthy / glaucoma / suspect (488 images, both eyes of 244 patients)",
        {"glaucoma_status": "single"}, {"glaucoma_status": ["healthy", "glaucoma", "suspect"]}, 488, "~1.6 GB",
        (RemoteFile("papila.zip", "https://figshare.com/ndownloader/files/35013982", None),),
        "CC BY 4.0",
        "Kovalyk O. et al., PAPILA: Dataset with fundus images and clinical data of both eyes of the same patient "
        "for glaucoma assessment, Scientific Data 9, 291 (2022)",
        "manual", "labels ship as spreadsheets: export them to a CSV and use from_csv (see the page)"),
    "idrid": DatasetInfo(
        "idrid", "IDRiD disease grading: DR grade 0-4 and macular-oedema risk 0-2 (516 images)",
        {"dr_grade": "ordinal"}, {"dr_grade": DR_NAMES}, 516, "~0.4 GB", (), "CC BY 4.0",
        "Porwal P. et al., Indian Diabetic Retinopathy Image Dataset (IDRiD), Data 3(3), 25 (2018)",
        "manual", "no Hugging Face mirror whose terms we could check: download from the IEEE DataPort page "
                  "and use from_csv"),
    "aptos2019": DatasetInfo(
        "aptos2019", "APTOS 2019 blindness detection: DR grade 0-4 (3,662 labelled images)",
        {"dr_grade": "ordinal"}, {"dr_grade": DR_NAMES}, 3662, "~9 GB", (), "Kaggle competition rules",
        "APTOS 2019 Blindness Detection, Kaggle (2019)", "manual",
        "needs a Kaggle account and API token: `kaggle competitions download -c aptos2019-blindness-detection`, "
        "then from_csv(train.csv, 'id_code', 'diagnosis')"),
}


def info(name: str) -> DatasetInfo:
    """The registry entry of ``name``; unknown names list the valid ones."""
    if name not in REGISTRY:
        raise DatasetError(f"unknown dataset {name!r}; datasets: synthretina, {', '.join(REGISTRY)}")
    return REGISTRY[name]


def registry_table() -> pd.DataFrame:
    """The registry as a table (``data_scripts/download.py --list`` prints it)."""
    rows = []
    for d in REGISTRY.values():
        rows.append({"name": d.name, "task": d.task, "images": d.n_images, "size": d.size_on_disk,
                     "licence": d.licence, "download": "yes" if d.layout != "manual" else "manual",
                     "command": f"python data_scripts/download.py {d.name}" if d.layout != "manual" else d.notes})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- download

def raw_dir(name: str, root=None) -> Path:
    return data_root(root) / name / "raw"


def download(name: str, root=None, files: list[str] | None = None, progress: bool = True) -> list[Path]:
    """Download a registry dataset's files into ``<root>/<name>/raw`` (skips verified ones).

    Transfer problems raise :class:`helpers.downloads.DownloadError` (checksum, offline, gated).
    """
    d = info(name)
    if d.layout == "manual" or not d.files:
        raise DatasetError(f"{name} cannot be downloaded automatically: {d.notes}")
    out = []
    for f in d.files:
        if files and f.name not in files:
            continue
        dest = raw_dir(name, root) / f.name
        if dest.exists() and (f.md5 is None or md5sum(dest) == f.md5):
            out.append(dest)
            continue
        out.append(fetch(mirror_url(f.name, f.url), dest, f.md5, progress=progress))
    if progress:
        print(f"{name}: licence {d.licence}. Cite: {d.citation}")
    return out


# --------------------------------------------------------------------------- prepare

def crop_fov(img: np.ndarray, size: int, threshold: int = 15) -> np.ndarray:
    """Crop to the circular field of view (bright pixels' bounding box), pad square with black, resize."""
    from PIL import Image
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    bright = img.max(-1) > threshold
    ys, xs = np.nonzero(bright)
    if len(ys) > 0.05 * bright.size:
        img = img[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1]
    h, w = img.shape[:2]
    side = max(h, w)
    canvas = np.zeros((side, side, 3), np.uint8)
    canvas[(side - h) // 2:(side - h) // 2 + h, (side - w) // 2:(side - w) // 2 + w] = img
    return np.asarray(Image.fromarray(canvas).resize((size, size), Image.BICUBIC))


def prepared_dir(name: str, size: int, root=None) -> Path:
    return data_root(root) / name / f"prepared-{size}"


def _write_prepared(folder: Path, images: np.ndarray, labels: pd.DataFrame) -> Path:
    tmp = folder.with_name(folder.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)  # our own leftover from an interrupted preparation
    tmp.mkdir(parents=True)
    np.save(tmp / "images.npy", images)
    labels.to_csv(tmp / "labels.csv", index=False)
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    return folder


def _split_by_group(groups: pd.Series, seed: int, fractions=(0.7, 0.1, 0.2)) -> np.ndarray:
    """Deterministic train/valid/test split by group (patient) id."""
    uniq = np.array(sorted(groups.astype(str).unique()))
    rng = np.random.default_rng(seed)
    rng.shuffle(uniq)
    cut1 = int(round(fractions[0] * len(uniq)))
    cut2 = cut1 + int(round(fractions[1] * len(uniq)))
    where = {g: ("train" if i < cut1 else "valid" if i < cut2 else "test") for i, g in enumerate(uniq)}
    return groups.astype(str).map(where).to_numpy()


def _read_images(blobs, size: int, names) -> tuple[np.ndarray, list[int]]:
    """Decode, crop and resize images; corrupted ones are skipped and counted (one warning)."""
    from PIL import Image
    from tqdm.auto import tqdm
    out, kept, bad = [], [], 0
    for i, blob in enumerate(tqdm(blobs, total=len(names), desc="preparing", leave=False)):
        try:
            with Image.open(io.BytesIO(blob()) if callable(blob) else blob) as im:
                out.append(crop_fov(np.asarray(im.convert("RGB")), size))
            kept.append(i)
        except Exception:  # noqa: BLE001 - any undecodable file is skipped and counted
            bad += 1
    if bad:
        warnings.warn(f"{bad} of {len(names)} image files could not be read and were skipped", stacklevel=3)
    if not out:
        raise DatasetError("no readable image found")
    return np.stack(out), kept


def prepare(name: str, size: int = 224, root=None, seed: int = 0) -> Path:
    """Turn the downloaded files into ``prepared-<size>/images.npy`` + ``labels.csv`` (with splits)."""
    d = info(name)
    raw = raw_dir(name, root)
    missing = [f.name for f in d.files if not (raw / f.name).exists()]
    if d.layout == "manual":
        raise DatasetError(f"{name} is prepared by hand: {d.notes}")
    if d.layout == "medmnist":
        avail = [f for f in d.files if (raw / f.name).exists()]
        if not avail:
            raise DatasetError(f"{name} is not downloaded; run: python data_scripts/download.py {name} "
                               f"--root {data_root(root)}")
        best = min(avail, key=lambda f: (((f.size or 28) < size), abs((f.size or 28) - size)))
        return _prepare_medmnist(d, raw / best.name, size, root)
    if missing:
        raise DatasetError(f"{name} is not downloaded ({', '.join(missing)} missing); run: "
                           f"python data_scripts/download.py {name} --root {data_root(root)}")
    archive = raw / d.files[0].name
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        raise DatasetError(f"{archive} is not a complete zip archive (truncated download?); delete it and "
                           f"run: python data_scripts/download.py {name}") from None
    with zf:
        if d.layout == "folders-zip":
            return _prepare_folders_zip(d, zf, size, root, seed)
        return _prepare_csv_zip(d, zf, size, root, seed)


_IMAGE_EXT = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def _prepare_medmnist(d: DatasetInfo, path: Path, size: int, root) -> Path:
    from PIL import Image
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
    return _write_prepared(prepared_dir(d.name, size, root), np.concatenate(images), pd.concat(rows, ignore_index=True))


def _prepare_folders_zip(d, zf, size, root, seed) -> Path:
    members = [m for m in zf.namelist() if m.lower().endswith(_IMAGE_EXT) and "__MACOSX" not in m]
    if not members:
        raise DatasetError(f"{d.name}: the archive holds no images")
    classes = sorted({Path(m).parent.name for m in members})
    imgs, kept = _read_images([lambda m=m: zf.read(m) for m in members], size, members)
    labels = pd.DataFrame({d.options["label"]: [classes.index(Path(members[i]).parent.name) for i in kept],
                           "file": [members[i] for i in kept]})
    labels["split"] = _split_by_group(labels["file"], seed)
    return _write_prepared(prepared_dir(d.name, size, root), imgs, labels)


def _prepare_csv_zip(d, zf, size, root, seed) -> Path:
    import fnmatch
    o = d.options
    csvs = [m for m in zf.namelist() if fnmatch.fnmatch(Path(m).name.lower(), o["csv_glob"].lower())]
    if not csvs:
        raise DatasetError(f"{d.name}: no labels CSV matching {o['csv_glob']} in the archive")
    table = pd.read_csv(io.BytesIO(zf.read(csvs[0])))
    for col in (o["image_col"], o["label_col"], o["patient_col"]):
        if col not in table.columns:
            raise DatasetError(f"{d.name}: column {col!r} missing from {csvs[0]}; columns: {list(table.columns)}")
    by_name = {Path(m).name: m for m in zf.namelist() if m.lower().endswith(_IMAGE_EXT)}
    members = [by_name.get(Path(str(p).replace("\\", "/")).name) for p in table[o["image_col"]]]
    present = [i for i, m in enumerate(members) if m is not None]
    imgs, kept = _read_images([lambda m=members[i]: zf.read(m) for i in present], size, present)
    rows = table.iloc[[present[k] for k in kept]].reset_index(drop=True)
    labels = pd.DataFrame({"dr_grade": rows[o["label_col"]].astype(int), "patient_id": rows[o["patient_col"]]})
    labels["split"] = _split_by_group(labels["patient_id"], seed)
    return _write_prepared(prepared_dir(d.name, size, root), imgs, labels)


def load_dataset(name: str, root=None, size: int | None = None, n_train=None, n_valid=None, n_test=None,
                 seed: int = 0, download_missing: bool = False, **options) -> ImageTable:
    """A prepared registry dataset as an :class:`~helpers.table.ImageTable` (``n_*`` subsample each split).

    Any other keyword (a SynthRetina option such as ``balanced`` left in a
    profile, a typo) is refused with a ``ValueError`` that lists the valid ones.
    """
    d = info(name)
    if options:
        import inspect
        valid = [p for p in inspect.signature(load_dataset).parameters if p not in ("name", "options")]
        raise ValueError(f"dataset {name!r} got unknown option(s) {', '.join(map(repr, sorted(options)))}; "
                         f"valid options: {', '.join(valid)}")
    size = int(size or 224)
    folder = prepared_dir(name, size, root)
    if not (folder / "labels.csv").exists():
        have_raw = any((raw_dir(name, root) / f.name).exists() for f in d.files)
        if not have_raw and download_missing:
            download(name, root)
            have_raw = True
        if not have_raw:
            raise DatasetError(f"dataset {name!r} is not downloaded. Download it from Python with\n"
                               f"  helpers.data.load({name!r}, download_missing=True)\n"
                               f"or from a checkout with\n  python data_scripts/download.py {name} --root "
                               f"{data_root(root)}\n  python data_scripts/prepare.py {name} --size {size} "
                               f"--root {data_root(root)}")
        prepare(name, size, root, seed)
    images = np.load(folder / "images.npy", allow_pickle=False)
    labels = pd.read_csv(folder / "labels.csv")
    keep = []
    rng = np.random.default_rng(seed)
    for split, cap in (("train", n_train), ("valid", n_valid), ("test", n_test)):
        idx = np.flatnonzero(labels["split"].to_numpy() == split)
        if cap is not None and cap < len(idx):
            idx = np.sort(rng.choice(idx, int(cap), replace=False))
        keep.append(idx)
    keep = np.concatenate(keep)
    classes = dict(d.classes)
    for col in d.labels:
        if col not in classes:
            classes[col] = [str(i) for i in range(int(labels[col].max()) + 1)]
    return ImageTable(images[keep], labels.iloc[keep].reset_index(drop=True), tasks=dict(d.labels),
                      classes=classes, name=name)


# --------------------------------------------------------------------------- bring your own

def from_folder(path, size: int = 224, seed: int = 0, fractions=(0.7, 0.1, 0.2)) -> ImageTable:
    """A student's folder with one sub-folder per class, read into memory (cropped to the FOV, resized).

    Corrupted files are skipped and counted in one warning; an empty folder is an error.
    """
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(f"{path} is not a folder")
    files = sorted(p for p in path.glob("*/*") if p.suffix.lower() in _IMAGE_EXT)
    if not files:
        raise DatasetError(f"{path} holds no images in class sub-folders (expected {path}/<class>/<image>.png)")
    classes = sorted({p.parent.name for p in files})
    imgs, kept = _read_images(files, size, files)
    labels = pd.DataFrame({"label": [classes.index(files[i].parent.name) for i in kept],
                           "file": [str(files[i].relative_to(path)) for i in kept]})
    labels["split"] = _split_by_group(labels["file"], seed, fractions)
    return ImageTable(imgs, labels, tasks={"label": "single"}, classes={"label": classes}, name=path.name)


def from_csv(csv, image_col: str, label_col: str | list, patient_col: str | None = None, root=None,
             classes: list | None = None, size: int = 224, seed: int = 0, fractions=(0.7, 0.1, 0.2)) -> ImageTable:
    """A student's CSV of image paths and labels (a list of ``label_col`` = multi-label 0/1 columns).

    Splits go by ``patient_col`` when given (no patient in two splits). Label
    values are mapped to ``classes`` when given (an unknown value is an error).
    """
    csv = Path(csv)
    table = pd.read_csv(csv)
    label_cols = [label_col] if isinstance(label_col, str) else list(label_col)
    needed = [image_col] + label_cols + ([patient_col] if patient_col else [])
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise DatasetError(f"{csv.name}: column(s) {missing} missing; columns: {list(table.columns)}")
    if table.empty:
        raise DatasetError(f"{csv.name} has no rows")
    multi = len(label_cols) > 1
    if not multi:
        values = table[label_cols[0]]
        if classes is None:
            classes = sorted(values.astype(str).unique())
        names = [str(c) for c in classes]
        unknown = sorted(set(values.astype(str)) - set(names))
        if unknown:
            raise DatasetError(f"{csv.name}: unknown label(s) {unknown} in {label_cols[0]!r}; classes: {names}")
        table["label"] = values.astype(str).map({n: i for i, n in enumerate(names)})
    base = Path(root) if root else csv.parent
    files = [base / p for p in table[image_col].astype(str)]
    imgs, kept = _read_images(files, size, files)
    rows = table.iloc[kept].reset_index(drop=True)
    labels = rows[label_cols].astype(int) if multi else rows[["label"]].copy()
    groups = rows[patient_col] if patient_col else rows[image_col]
    if patient_col:
        labels["patient_id"] = rows[patient_col].to_numpy()
    labels["split"] = _split_by_group(groups, seed, fractions)
    tasks = {c: "multi" for c in label_cols} if multi else {"label": "single"}
    return ImageTable(imgs, labels, tasks=tasks, classes={} if multi else {"label": names}, name=csv.stem)
