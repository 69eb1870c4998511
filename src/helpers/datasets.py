"""Real datasets: a registry, a resumable checksum-verified download and a one-time preparation.

Explained on the "Data and weights" appendix page. ``helpers.data.load(name)``
calls :func:`load_dataset`; the command-line scripts in ``data_scripts/`` call
:func:`download` and :func:`prepare`. Bring-your-own data (:func:`from_folder`,
:func:`from_csv`) live in :mod:`helpers.byo` and are re-exported here.

Files are fetched by :func:`helpers.downloads.fetch` (resumable, checksum-verified;
``RETINA_DATA_MIRROR`` redirects them to a mirror). Nothing outside
``<root>/<name>/`` is ever written or deleted. A prepared folder is written under a
unique temporary name, under a lock, and renamed into place: two processes preparing
the same dataset both succeed, and a finished folder is only moved aside once its
replacement is complete.
"""
from __future__ import annotations

import inspect
import shutil
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import layouts
from .byo import (  # noqa: F401
    IMAGE_EXT,
    DatasetError,
    from_csv,
    from_folder,
    read_images,
    split_by_group,
    unreadable_report,
    warn_unreadable,
)
from .downloads import fetch, mirror_url
from .env import atomic_folder, data_root, lock
from .table import DR_NAMES, ImageTable


@dataclass(frozen=True)
class RemoteFile:
    name: str
    url: str
    md5: str | None = None      # None: not published; the download is not verified (said on the page)
    size: int = 0               # px side for MedMNIST files (0: the original 28 px)
    bytes: int | None = None    # expected file size (None: unknown); fetch checks it when given


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
    modality: str = "fundus"   # the normalisation its images take (helpers.views.STATS)


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
        "CC BY 4.0", MEDMNIST_CITE, "medmnist", "grey images, stacked to 3 channels", {"label": "oct_class"},
        modality="oct"),
    "deepdrid": DatasetInfo(
        "deepdrid", "diabetic retinopathy grade 0-4 and image quality, 2,000 regular fundus images",
        {"dr_grade": "ordinal"}, {"dr_grade": DR_NAMES}, 2000, "1.37 GB",
        (RemoteFile("DeepDRiD.zip", "https://zenodo.org/records/8248825/files/DeepDRiD.zip?download=1",
                    "3379e2fd7a2dd398545a67148420a5d3"),),
        "CC BY-SA 4.0",
        "Liu R. et al., DeepDRiD: Diabetic Retinopathy — Grading and Image Quality Estimation Challenge, Patterns 3(6) (2022)",
        "csv-zip", "one image's grade is its own eye's (left_/right_eye_DR_Level; the patient grade, the worse "
        "eye's, stays as patient_dr_grade); the training and validation CSVs together, split by patient; the "
        "archive's file name on Zenodo is not verified here",
        {"csvs": ("regular-fundus-training.csv", "regular-fundus-validation.csv"), "image_col": "image_path",
         "id_col": "image_id", "eye_cols": {"l": "left_eye_DR_Level", "r": "right_eye_DR_Level"},
         "patient_label_col": "patient_DR_Level", "patient_col": "patient_id"}),
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
        "then helpers.data.load('train.csv', image_col='id_code', label_col='diagnosis', image_dir='train_images', "
        "ext='.png', ordinal='diagnosis')"),
}


def info(name: str) -> DatasetInfo:
    """The registry entry of ``name``; unknown names list the valid ones."""
    if name not in REGISTRY:
        raise DatasetError(f"unknown dataset {name!r}; datasets: synthretina, {', '.join(REGISTRY)}. For your own "
                           "images pass a CSV or a folder: helpers.data.load('labels.csv', image_col=..., "
                           "label_col=...) (from_csv), or helpers.data.load('my_images/') with one sub-folder per "
                           "class (from_folder)")
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


def _cannot_write(path, exc: OSError) -> DatasetError:
    return DatasetError(f"cannot write to {path}: set RETINA_DATA or pass root=/--root to a writable folder "
                        f"({exc.strerror or exc})")


def download(name: str, root=None, files: list[str] | None = None, progress: bool = True) -> list[Path]:
    """Download a registry dataset's files into ``<root>/<name>/raw``.

    :func:`helpers.downloads.fetch` skips a file that is already there and valid. Transfer problems
    raise :class:`helpers.downloads.DownloadError` (checksum, offline, gated); a folder that cannot
    be written a :class:`DatasetError` that says so.
    """
    d = info(name)
    if d.layout == "manual" or not d.files:
        raise DatasetError(f"{name} cannot be downloaded automatically: {d.notes}")
    out = []
    try:
        raw_dir(name, root).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _cannot_write(raw_dir(name, root), exc) from None
    for f in d.files:
        if files and f.name not in files:
            continue
        dest = raw_dir(name, root) / f.name
        extra = {"size": f.bytes} if f.bytes is not None else {}  # fetch checks the size when it is known
        try:
            out.append(fetch(mirror_url(f.name, f.url), dest, f.md5, progress=progress, **extra))
        except OSError as exc:  # fetch turns network errors into DownloadError: this one is the disk's
            raise _cannot_write(dest.parent, exc) from None
    if progress:
        print(f"{name}: licence {d.licence}. Cite: {d.citation}")
    return out


# --------------------------------------------------------------------------- prepare

def needed_file(d: DatasetInfo, size: int, among=None) -> RemoteFile:
    """The one file that serves ``size`` px: for MedMNIST the smallest release at least that large (else the
    largest), among ``among`` (default: every release); for other layouts the archive."""
    files = list(among if among is not None else d.files)
    if d.layout != "medmnist":
        return files[0]
    return min(files, key=lambda f: (((f.size or 28) < size), abs((f.size or 28) - size)))


def prepared_dir(name: str, size: int, root=None) -> Path:
    return data_root(root) / name / f"prepared-{size}"


def _complete(folder: Path) -> bool:
    return (folder / "images.npy").is_file() and (folder / "labels.csv").is_file()


@contextmanager
def _locked(folder: Path):
    """Hold the cache lock of ``folder``; remove the temporary folders crashed writers left beside it."""
    try:
        held = lock(folder)
        held.acquire()
    except OSError as exc:
        raise _cannot_write(folder.parent, exc) from None
    try:
        # Every writer holds this lock while it writes, so what is left now belongs to no live process.
        for old in folder.parent.glob(f".{folder.name}.*"):
            if old.is_dir() and old.suffix in (".partial", ".old"):
                shutil.rmtree(old, ignore_errors=True)
        legacy = folder.with_name(folder.name + ".partial")  # the fixed name earlier versions used
        if legacy.is_dir():
            shutil.rmtree(legacy, ignore_errors=True)
        yield
    finally:
        held.release()


def _write_prepared(folder: Path, images: np.ndarray, labels: pd.DataFrame, files: dict | None = None) -> Path:
    """Write ``images.npy``, ``labels.csv`` (and text ``files``) with :func:`helpers.env.atomic_folder`, called
    under :func:`_locked`: a finished folder already there is replaced only once the new one is complete."""
    def write(tmp: Path) -> None:
        np.save(tmp / "images.npy", images)
        labels.to_csv(tmp / "labels.csv", index=False)
        for fname, text in (files or {}).items():
            (tmp / fname).write_text(text)
    try:
        return atomic_folder(folder, write, replace=True)
    except OSError as exc:
        raise _cannot_write(folder, exc) from None


def prepare(name: str, size: int = 224, root=None, seed: int = 0, overwrite: bool = True) -> Path:
    """Turn the downloaded files into ``prepared-<size>/images.npy`` + ``labels.csv`` (with splits).

    Safe across processes: under a lock, into a unique temporary folder, renamed into place.
    ``overwrite=False`` returns a complete prepared folder as it is (what :func:`load_dataset` does).
    Unreadable images are skipped, named in one warning and listed in ``prepared-<size>/unreadable.txt``.
    """
    d = info(name)
    raw = raw_dir(name, root)
    if d.layout == "manual":
        raise DatasetError(f"{name} is prepared by hand: {d.notes}")
    avail = [f for f in d.files if (raw / f.name).exists()]
    if d.layout == "medmnist" and not avail or d.layout != "medmnist" and len(avail) < len(d.files):
        missing = [f.name for f in d.files if f not in avail]
        raise DatasetError(f"{name} is not downloaded ({', '.join(missing)} missing); run: "
                           f"python data_scripts/download.py {name} --root {data_root(root)}")
    folder = prepared_dir(name, size, root)
    with _locked(folder):
        if not overwrite and _complete(folder):
            return folder  # another process prepared it while we waited: that is success
        if d.layout == "medmnist":
            best = needed_file(d, size, avail)
            images, labels, bad, total = layouts.prepare_medmnist(d, raw / best.name, size)
        else:
            archive = raw / d.files[0].name
            try:
                zf = zipfile.ZipFile(archive)
            except zipfile.BadZipFile:
                raise DatasetError(f"{archive} is not a complete zip archive (truncated download?); delete it "
                                   f"and run: python data_scripts/download.py {name}") from None
            with zf:
                make = layouts.prepare_folders_zip if d.layout == "folders-zip" else layouts.prepare_csv_zip
                images, labels, bad, total = make(d, zf, size, seed)
        files = {"unreadable.txt": unreadable_report(bad, total, name)} if bad else {}
        _write_prepared(folder, images, labels, files)
    warn_unreadable(bad, total, name, folder / "unreadable.txt", write=False)
    return folder


def load_dataset(name: str, root=None, size: int | None = None, n_train=None, n_valid=None, n_test=None,
                 seed: int = 0, download_missing: bool = False, **options) -> ImageTable:
    """A prepared registry dataset as an :class:`~helpers.table.ImageTable` (``n_*`` subsample each split).

    Any other keyword (a SynthRetina option such as ``balanced`` left in a
    profile, a typo) is refused with a ``ValueError`` that lists the valid ones.
    """
    d = info(name)
    if options:
        valid = [p for p in inspect.signature(load_dataset).parameters if p not in ("name", "options")]
        raise ValueError(f"dataset {name!r} got unknown option(s) {', '.join(map(repr, sorted(options)))}; "
                         f"valid options: {', '.join(valid)}")
    size = int(size or 224)
    folder = prepared_dir(name, size, root)
    if not (folder / "labels.csv").exists():
        have_raw = any((raw_dir(name, root) / f.name).exists() for f in d.files)
        if not have_raw and download_missing:
            download(name, root, files=[needed_file(d, size).name])  # one file: the size this call needs
            have_raw = True
        if not have_raw:
            raise DatasetError(f"dataset {name!r} is not downloaded. Download it from Python with\n"
                               f"  helpers.data.load({name!r}, download_missing=True)\n"
                               f"or from a checkout with\n  python data_scripts/download.py {name} --root "
                               f"{data_root(root)}\n  python data_scripts/prepare.py {name} --size {size} "
                               f"--root {data_root(root)}")
        prepare(name, size, root, seed, overwrite=False)
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
                      classes=classes, name=name, modality=d.modality)
