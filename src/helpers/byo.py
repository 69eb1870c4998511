"""Bring your own data: a folder per class, or a CSV of image paths and labels, read into an ImageTable.

Explained on the "Data and weights" appendix page (section "Your own images").
``helpers.data.load("labels.csv", image_col=..., label_col=...)`` calls :func:`from_csv`,
``helpers.data.load("my_folder/")`` calls :func:`from_folder`. The registry's preparation
(:mod:`helpers.datasets`) reads its archives with the same :func:`read_images` and splits with
:func:`split_by_group`.

Your data are taken as given: a CSV keeps its own column names (the task is called what the CSV
calls it) and its own ``split`` column. Anything that cannot be used is refused or skipped with a
message that names the file, the column and the rows. Nothing is ever written inside your image
folder: the list of unreadable files goes to ``<root>/byo/<name>-unreadable.txt``.
"""
from __future__ import annotations

import io
import re
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from .env import atomic_write, cache_dir, data_root
from .table import SPLITS, ImageTable

IMAGE_EXT = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
NAMED = 5  # how many files, rows or values a message names before "and N more"
# What a file that cannot be decoded raises (Pillow's "broken file" signal is SyntaxError; zip members add
# BadZipFile for a bad CRC and zlib.error for broken compressed data). Image.DecompressionBombError is added
# where Pillow is imported.
UNREADABLE = (OSError, ValueError, SyntaxError, EOFError, zipfile.BadZipFile, zlib.error)


class DatasetError(RuntimeError):
    """A dataset problem (unknown name, not downloaded, unreadable files) with a message that says what to do.

    Transfer problems are :class:`helpers.downloads.DownloadError` instead.
    """


def _some(items, n: int = NAMED) -> str:
    items = [str(i) for i in items]
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


def _values(series: pd.Series) -> str:
    return _some(map(repr, sorted(set(series.astype(str)))))


# --------------------------------------------------------------------------- reading images

def crop_fov(img: np.ndarray, size: int, threshold: int = 15) -> np.ndarray:
    """Crop to the circular field of view (bright pixels' bounding box), pad square with black, resize."""
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


def read_images(sources, names, size: int) -> tuple[np.ndarray | None, list[int], list[tuple[str, str]]]:
    """Decode, crop to the field of view and resize every image; one that cannot be read is skipped.

    ``sources`` are paths, or callables that return a file's bytes (members of an archive); ``names``
    say which file each one is in messages. Returns the images (``None`` when none was readable),
    the positions that were read, and ``(name, reason)`` for every file skipped.
    """
    errors = (Image.DecompressionBombError,) + UNREADABLE
    out, kept, bad = [], [], []
    for i, (src, name) in enumerate(tqdm(list(zip(sources, names)), desc="reading images", leave=False)):
        try:
            with Image.open(io.BytesIO(src()) if callable(src) else src) as im:
                out.append(crop_fov(np.asarray(im.convert("RGB")), size))
            kept.append(i)
        except FileNotFoundError:
            bad.append((str(name), "not found"))
        except Image.UnidentifiedImageError:
            bad.append((str(name), "not an image file Pillow can read"))
        except errors as exc:
            bad.append((str(name), f"{type(exc).__name__}: {exc}"))
    return (np.stack(out) if out else None), kept, bad


def unreadable_report(bad, total: int, source) -> str:
    """The full list of skipped files, one ``name<TAB>reason`` a line (the text of ``unreadable.txt``)."""
    return f"# {len(bad)} of {total} image files of {source} could not be read\n" + \
        "".join(f"{n}\t{r}\n" for n, r in bad)


def warn_unreadable(bad, total: int, source, log: Path | None = None, write: bool = True) -> None:
    """One warning that names the first unreadable files, their count and the log holding the full list.

    With ``write`` the list is written to ``log`` here; ``write=False`` when the caller already did.
    """
    if not bad:
        return
    where = ""
    if log is not None:
        where = f"; full list in {log}"
        if write:
            try:
                atomic_write(log, lambda tmp: tmp.write_text(unreadable_report(bad, total, source)))
            except OSError as exc:
                where = f"; the full list could not be written to {log} ({exc.strerror or exc})"
    warnings.warn(f"{len(bad)} of {total} image files could not be read and were skipped: "
                  f"{_some(f'{n} ({r})' for n, r in bad)}{where}", stacklevel=3)


def _log_path(root, name: str, images: Path) -> Path:
    """``<root>/byo/<name>-unreadable.txt``, or the cache folder when that would be inside ``images``."""
    log = data_root(root).expanduser().resolve() / "byo" / f"{name}-unreadable.txt"
    if log.is_relative_to(images.resolve()):
        log = cache_dir("byo") / log.name
    return log


# --------------------------------------------------------------------------- splits

def split_by_group(groups: pd.Series, seed: int, fractions=(0.7, 0.1, 0.2)) -> np.ndarray:
    """Deterministic train/valid/test split by group (patient) id: no group lands in two splits."""
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must be three numbers (train, valid, test) that sum to 1, got {fractions}")
    groups = pd.Series(groups).astype(str)
    uniq = np.array(sorted(groups.unique()))
    rng = np.random.default_rng(seed)
    rng.shuffle(uniq)
    cut1 = int(round(fractions[0] * len(uniq)))
    cut2 = cut1 + int(round(fractions[1] * len(uniq)))
    where = {g: ("train" if i < cut1 else "valid" if i < cut2 else "test") for i, g in enumerate(uniq)}
    return groups.map(where).to_numpy()


def _draw_split(groups, by: str, seed: int, fractions, hint: str = "") -> np.ndarray:
    pct = "/".join(str(round(100 * f)) for f in fractions)
    print(f"no split column: drew train/valid/test {pct} by {by}, seed {seed}{hint}")
    return split_by_group(groups, seed, fractions)


def warn_unseen_classes(labels: pd.DataFrame, tasks: dict, classes: dict, name: str) -> None:
    """Warn for every class (for a multi-label column: its positives) found in valid or test but not in train."""
    train = labels["split"] == "train"
    for col, kind in tasks.items():
        values = labels[col].where(labels[col] == 1) if kind == "multi" else labels[col]
        seen = set(values[train].dropna())
        for split in ("valid", "test"):
            here = values[labels["split"] == split].dropna()
            for v in sorted(set(here) - seen):
                names = classes.get(col, [])
                what = f"label {col!r} (value 1)" if kind == "multi" else \
                    f"class '{names[int(v)] if int(v) < len(names) else v}' of {col!r}"
                warnings.warn(f"{name}: {what} is in the {split} split ({int((here == v).sum())} images) but not "
                              "in train, so no model can learn it: put some of its images in train (your split "
                              "column), or leave it out", stacklevel=3)


# --------------------------------------------------------------------------- a folder per class

def from_folder(path, size: int = 224, seed: int = 0, fractions=(0.7, 0.1, 0.2), patient_pattern: str | None = None,
                label_col: str = "label", root=None) -> ImageTable:
    """A folder with one sub-folder per class (``path/<class>/<image>``), read into memory (FOV-cropped, resized).

    The split is drawn by file, or by patient when ``patient_pattern`` (a regular expression with one
    group, searched in each file name, e.g. ``r"^(\\d+)_"`` for ``132_left.png``) finds the patient id:
    then no patient is in two splits. Unreadable files are skipped, named in one warning and listed
    in ``<root>/byo/<folder>-unreadable.txt``.
    """
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(f"{path} is not a folder")
    files = sorted(p for p in path.glob("*/*") if p.suffix.lower() in IMAGE_EXT)
    if not files:
        raise DatasetError(f"{path} holds no images in class sub-folders (expected {path}/<class>/<image>.png)")
    names = [str(p.relative_to(path)) for p in files]
    patients = None
    if patient_pattern is not None:
        pattern = re.compile(patient_pattern)
        if pattern.groups != 1:
            raise DatasetError(f"patient_pattern {patient_pattern!r} has {pattern.groups} groups; it needs exactly "
                               "one, around the patient id (e.g. r'^(\\d+)_' for 132_left.png)")
        found = [pattern.search(p.name) for p in files]
        unmatched = [n for n, m in zip(names, found) if m is None]
        if unmatched:
            raise DatasetError(f"patient_pattern {patient_pattern!r} finds no patient id in {len(unmatched)} of "
                               f"{len(files)} file names: {_some(unmatched)}")
        patients = [m.group(1) for m in found]
    classes = sorted({p.parent.name for p in files})
    imgs, kept, bad = read_images(files, names, size)
    warn_unreadable(bad, len(files), path, _log_path(root, path.name, path))
    if imgs is None:
        raise DatasetError(f"no readable image in {path}: {_some(f'{n} ({r})' for n, r in bad)}")
    labels = pd.DataFrame({label_col: [classes.index(files[i].parent.name) for i in kept],
                           "file": [names[i] for i in kept]})
    if patients is None:
        labels["split"] = _draw_split(labels["file"], "file", seed, fractions,
                                      " (give patient_pattern= when the file names carry patient ids)")
    else:
        labels["patient_id"] = [patients[i] for i in kept]
        labels["split"] = _draw_split(labels["patient_id"], f"patient ({patient_pattern})", seed, fractions)
    tasks, names_of = {label_col: "single"}, {label_col: classes}
    warn_unseen_classes(labels, tasks, names_of, path.name)
    return ImageTable(imgs, labels, tasks=tasks, classes=names_of, name=path.name)


# --------------------------------------------------------------------------- a CSV

def _lines(table: pd.DataFrame, mask) -> str:
    return "CSV line(s) " + _some(table.index[np.asarray(mask)])  # the index holds CSV line numbers


def _where(table: pd.DataFrame, where, csv: Path) -> pd.DataFrame:
    """Rows kept by ``where``: a pandas query string, or a callable on the table (a mask or a table)."""
    try:
        kept = table.query(where) if isinstance(where, str) else where(table)
    except (NameError, SyntaxError, ValueError, TypeError, KeyError) as exc:
        raise DatasetError(f"where={where!r} failed on {csv.name} ({type(exc).__name__}: {exc}); "
                           f"columns: {list(table.columns)}") from None
    return kept if isinstance(kept, pd.DataFrame) else table[np.asarray(kept, bool)]


def _query_name(col: str) -> str:
    return col if col.isidentifier() else f"`{col}`"  # how a pandas query names a column


def _refuse_blanks(table: pd.DataFrame, col: str, csv: Path) -> None:
    blank = table[col].isna() | (table[col].astype(str).str.strip() == "")
    if blank.any():
        raise DatasetError(f"{csv}: {int(blank.sum())} row(s) have no value in column {col!r} "
                           f"({_lines(table, blank)}); the first:\n{table.loc[blank].head(3).to_string()}\n"
                           f"Fill them in, or leave those rows out with where=\"{_query_name(col)}.notna()\"")


def _encode(values: pd.Series, col: str, kind: str, names, csv: Path) -> tuple[pd.Series, list | None]:
    """Class ids for one label column, and its class names (``None`` for a 0/1 multi-label column)."""
    numbers = pd.to_numeric(values, errors="coerce")
    integral = numbers.notna().all() and (numbers == numbers.round()).all()
    if kind == "multi":
        bad = ~numbers.isin([0, 1])
        if bad.any():
            raise DatasetError(f"{csv.name}: multi-label column {col!r} must hold 0 or 1; it holds "
                               f"{_values(values[bad])} ({_lines(values.to_frame(), bad)}). "
                               "Pass one label column, or name graded columns in ordinal=")
        return numbers.astype(np.int64), None
    if names is None and kind == "ordinal":
        if not integral or (numbers < 0).any():
            raise DatasetError(f"{csv.name}: ordinal column {col!r} holds {_values(values)}; "
                               "give its grades in order with classes=[...] (or a dict column -> names)")
        return numbers.astype(np.int64), [str(i) for i in range(int(numbers.max()) + 1)]
    keys = numbers.astype(np.int64).astype(str) if integral else values.astype(str).str.strip()
    if names is None:  # the values in order (numbers as numbers: 2 before 10)
        names = [str(v) for v in sorted(set(numbers.astype(np.int64) if integral else keys))]
    index = {str(n): i for i, n in enumerate(names)}
    if integral and not set(keys) & set(index) and numbers.between(0, len(names) - 1).all():
        return numbers.astype(np.int64), [str(n) for n in names]  # class ids given with their names
    unknown = sorted(set(keys) - set(index))
    if unknown:
        raise DatasetError(f"{csv.name}: unknown label(s) {unknown} in {col!r}; classes: {[str(n) for n in names]}")
    return keys.map(index).astype(np.int64), [str(n) for n in names]


def _check_split(table: pd.DataFrame, split_col: str, patient_col: str | None, csv: Path) -> None:
    """Refuse split values other than train / valid / test; warn when a patient is in two splits."""
    split = table[split_col].astype(str).str.strip()
    wrong = ~split.isin(SPLITS)
    if wrong.any():
        raise DatasetError(f"{csv.name}: split column {split_col!r} holds {_values(split[wrong])} "
                           f"({_lines(table, wrong)}); its values must be train, valid or test. Rename them, "
                           "or pass split_col=None to draw a split")
    if patient_col:
        n = table.assign(_split=split).groupby(patient_col)["_split"].nunique()
        if (n > 1).any():
            warnings.warn(f"{csv.name}: {int((n > 1).sum())} patient(s) of {patient_col!r} are in two splits of "
                          f"{split_col!r} (e.g. {_some(n.index[n > 1])}): their images leak between training and "
                          "evaluation", stacklevel=3)


def _image_base(csv: Path, image_dir) -> Path:
    """The folder image paths are relative to: ``image_dir`` (beside the CSV, or as given), else the CSV's."""
    if image_dir is None:
        return csv.parent
    given = Path(image_dir).expanduser()
    base = given if given.is_absolute() or not (csv.parent / given).is_dir() else csv.parent / given
    if not base.is_dir():
        raise DatasetError(f"image_dir {str(image_dir)!r} is not a folder (looked in {csv.parent / given} "
                           f"and {given.resolve()})")
    return base


def _image_files(table: pd.DataFrame, image_col: str, base: Path, ext: str | None):
    """The file of every row (ids without an image extension get ``ext``, or whichever extension exists)."""
    tries = [ext] if ext else [e for x in IMAGE_EXT for e in (x, x.upper())]
    files, missing = [], []
    for value in table[image_col].astype(str):
        s = value.replace("\\", "/").lstrip("/") if "\\" in value else value  # Windows paths from the CSV
        p = Path(s).expanduser()
        p = p if p.is_absolute() else base / p
        candidates = [p] if p.suffix.lower() in IMAGE_EXT else [p.with_name(p.name + e) for e in tries]
        hit = next((c for c in candidates if c.is_file()), None)
        files.append(hit)
        if hit is None:
            missing.append(str(candidates[0]) if len(candidates) == 1 else
                           f"{p} (tried {', '.join(c.suffix for c in candidates[:6])}...)")
    return files, missing


def from_csv(csv, image_col: str | None = None, label_col: str | list | None = None, patient_col: str | None = None,
             image_dir=None, ext: str | None = None, split_col: str | None = "split", ordinal=None, where=None,
             classes=None, size: int = 224, seed: int = 0, fractions=(0.7, 0.1, 0.2), root=None) -> ImageTable:
    """A CSV with one row per image: an image path (or id) column, label column(s), other columns kept as they are.

    - ``label_col``: one column (a single-label task named as in the CSV), or a list of 0/1 columns
      (one multi-label task); ``ordinal`` names the columns that are grades (their values stay the
      grade numbers); ``classes`` gives class names in order (a list, or a dict column -> list).
    - ``image_dir``: the folder the paths are relative to (default: the CSV's folder); ``ext`` is
      appended to ids without an image extension (without it, whichever extension exists is used).
    - ``split_col``: a column of train / valid / test, used as given when present; otherwise (or with
      ``split_col=None``) a split is drawn with ``fractions`` and ``seed`` — by ``patient_col`` when
      given, so that no patient is in two splits — and one line says so.
    - ``where``: keep only some rows (a pandas query string such as ``"eye == 'left'"``, or a callable
      on the table returning a mask).
    - ``root``: the data folder (``$RETINA_DATA``) where the list of unreadable files is written.

    Blank labels, unknown split values and missing files are refused or reported with the CSV lines.
    """
    csv = Path(csv).expanduser()
    try:
        # ids and patient ids stay text: "007" keeps its zeros, "1e10" stays a file name
        table = pd.read_csv(csv, dtype={c: str for c in (image_col, patient_col) if c})
    except FileNotFoundError:
        raise DatasetError(f"no such CSV file: {csv}") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{csv} is not a readable CSV ({exc})") from None
    table.index = table.index + 2  # CSV line numbers (line 1 is the header) for the messages below
    if image_col is None or label_col is None:
        raise DatasetError(f"{csv.name}: say which column holds the images and which the labels, e.g. "
                           f"image_col={str(table.columns[0])!r}, label_col=...; columns: {list(table.columns)}")
    label_cols = [label_col] if isinstance(label_col, str) else list(label_col)
    ordinal = [ordinal] if isinstance(ordinal, str) else list(ordinal or [])
    use_split = split_col if split_col and (split_col in table.columns or split_col != "split") else None
    needed = [image_col, *label_cols] + [c for c in (patient_col, use_split) if c]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise DatasetError(f"{csv.name}: column(s) {missing} missing; columns: {list(table.columns)}")
    if set(ordinal) - set(label_cols):
        raise DatasetError(f"ordinal={sorted(set(ordinal) - set(label_cols))} names no label column; "
                           f"label columns: {label_cols}")
    if isinstance(classes, (list, tuple)) and len(label_cols) > 1:
        raise DatasetError("with several label columns give classes as a dict: column -> class names")
    if where is not None:
        table = _where(table, where, csv)
    if table.empty:
        raise DatasetError(f"{csv.name} has no rows" + (f" left after where={where!r}" if where is not None else ""))
    for col in needed:
        _refuse_blanks(table, col, csv)
    table = table.copy()
    tasks, names = {}, {}
    for col in label_cols:
        tasks[col] = "ordinal" if col in ordinal else "multi" if len(label_cols) > 1 else "single"
        given = classes.get(col) if isinstance(classes, dict) else classes
        table[col], class_names = _encode(table[col], col, tasks[col], given, csv)
        if class_names is not None:
            names[col] = class_names
    if use_split:
        _check_split(table, use_split, patient_col, csv)
    base = _image_base(csv, image_dir)
    files, missing = _image_files(table, image_col, base, f".{ext.lstrip('.')}" if ext else None)
    found = [i for i, f in enumerate(files) if f is not None]
    if not found:
        raise DatasetError(f"none of the {len(files)} images named in column {image_col!r} of {csv} exists: "
                           f"{_some(missing, 3)}. Give image_dir= (the folder the paths are relative to) and, "
                           "when the ids carry no extension, ext= (e.g. ext='.png')")
    imgs, kept, bad = read_images([files[i] for i in found], [str(files[i]) for i in found], size)
    bad = [(m, "not found") for m in missing] + bad
    warn_unreadable(bad, len(files), csv, _log_path(root, csv.stem, base))
    if imgs is None:
        raise DatasetError(f"no readable image among the {len(files)} files of column {image_col!r} of {csv}: "
                           f"{_some(f'{n} ({r})' for n, r in bad)}")
    rows = table.iloc[[found[k] for k in kept]].reset_index(drop=True)
    if use_split:
        rows["split"] = rows[use_split].astype(str).str.strip()
    elif patient_col:
        rows["split"] = _draw_split(rows[patient_col], patient_col, seed, fractions)
    else:
        rows["split"] = _draw_split(rows[image_col], "image", seed, fractions,
                                    " (give patient_col= when several images come from one patient)")
    warn_unseen_classes(rows, tasks, names, csv.name)
    return ImageTable(imgs, rows, tasks=tasks, classes=names, name=csv.stem)
