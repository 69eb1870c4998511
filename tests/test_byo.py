"""Bring-your-own data taken as given: a user's CSV or folder, and the bad inputs a user tried."""
import io
import re
import warnings

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import byo, data, datasets, evaluation


def fundus(path, seed: int, size: int = 40, fmt: str | None = None):
    """Write a small fundus-like picture (a coloured disc on black) to ``path``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    img = np.zeros((size, size, 3), np.uint8)
    img[(xx - size / 2) ** 2 + (yy - size / 2) ** 2 < (size * 0.4) ** 2] = (rng.integers(150, 255), 80, 30)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, format=fmt)
    return path


@pytest.fixture(autouse=True)
def data_root(tmp_path, monkeypatch):
    """Every test writes its logs under its own RETINA_DATA."""
    root = tmp_path / "retina-data"
    monkeypatch.setenv("RETINA_DATA", str(root))
    monkeypatch.setenv("RETINA_CACHE", str(tmp_path / "retina-cache"))
    return root


def write_csv(folder, rows, name="labels.csv"):
    csv = folder / name
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv


def graded_set(folder, n_patients=12, eyes=("left", "right"), split=False):
    """``folder/images/<pid>_<eye>.png`` with a labels.csv: image, dr_grade, patient_id, eye (and split)."""
    rows = []
    for p in range(n_patients):
        for e, eye in enumerate(eyes):
            fundus(folder / "images" / f"{p:03d}_{eye}.png", 10 * p + e)
            row = {"image": f"images/{p:03d}_{eye}.png", "dr_grade": (p + e) % 5, "patient_id": f"P{p:03d}",
                   "eye": eye}
            if split:
                row["split"] = "train" if p < n_patients - 4 else "valid" if p < n_patients - 2 else "test"
            rows.append(row)
    return write_csv(folder, rows)


def test_a_split_column_is_honoured_and_a_drawn_split_is_announced(tmp_path, capsys):
    csv = graded_set(tmp_path, split=True)
    given = pd.read_csv(csv)
    table = byo.from_csv(csv, "image", "dr_grade", patient_col="patient_id", size=32)
    assert list(table.labels["split"]) == list(given["split"])  # the user's split, row for row
    assert "no split column" not in capsys.readouterr().out
    # without a split column: a split is drawn by patient, and one line says how
    drawn = byo.from_csv(csv, "image", "dr_grade", patient_col="patient_id", split_col=None, size=32)
    assert "no split column: drew train/valid/test 70/10/20 by patient_id, seed 0" in capsys.readouterr().out
    assert (drawn.labels.groupby("patient_id")["split"].nunique() == 1).all()
    # a split value that is not train/valid/test is named, with its lines, and what to do
    given.loc[[3, 7], "split"] = "val"
    given.to_csv(tmp_path / "bad_split.csv", index=False)
    with pytest.raises(datasets.DatasetError) as err:
        byo.from_csv(tmp_path / "bad_split.csv", "image", "dr_grade", size=32)
    msg = str(err.value)
    assert "holds 'val'" in msg and "CSV line(s) 5, 9" in msg
    assert "train, valid or test" in msg and "split_col=None" in msg
    # a patient whose two eyes sit in two splits of the user's own column is pointed out
    given.loc[[3, 7], "split"] = "train"
    given.loc[1, "split"] = "test"  # P000's right eye
    given.to_csv(tmp_path / "leaky.csv", index=False)
    with pytest.warns(UserWarning, match="1 patient\\(s\\) of 'patient_id' are in two splits.*P000"):
        byo.from_csv(tmp_path / "leaky.csv", "image", "dr_grade", patient_col="patient_id", size=32)
    with pytest.raises(datasets.DatasetError, match="image_dir 'pics' is not a folder"):
        byo.from_csv(csv, "image", "dr_grade", image_dir="pics", size=32)
    # a split column given by another name must exist
    with pytest.raises(datasets.DatasetError, match=r"\['fold'\] missing"):
        byo.from_csv(csv, "image", "dr_grade", split_col="fold", size=32)


def test_blank_labels_are_refused_naming_the_file_column_count_and_rows(tmp_path):
    csv = graded_set(tmp_path)
    rows = pd.read_csv(csv)
    rows.loc[[2, 5, 6], "dr_grade"] = np.nan
    rows.to_csv(csv, index=False)
    before = csv.read_bytes()
    with pytest.raises(datasets.DatasetError) as err:
        byo.from_csv(csv, "image", "dr_grade", size=32)
    msg = str(err.value)
    assert str(csv) in msg and "'dr_grade'" in msg and "3 row(s) have no value" in msg
    assert "CSV line(s) 4, 7, 8" in msg and "images/001_left.png" in msg  # the first rows themselves
    assert 'where="dr_grade.notna()"' in msg
    # what it says to do works, and nothing of the user's was touched
    table = byo.from_csv(csv, "image", "dr_grade", where="dr_grade.notna()", size=32)
    assert len(table) == 21 and csv.read_bytes() == before
    rows.loc[0, "patient_id"] = None  # any column it needs, not only labels
    rows.to_csv(csv, index=False)
    with pytest.raises(datasets.DatasetError, match=r"1 row\(s\) have no value in column 'patient_id' \(CSV line"):
        byo.from_csv(csv, "image", "eye", patient_col="patient_id", size=32)


def test_a_class_only_in_valid_or_test_is_reported(tmp_path):
    rows = []
    for i in range(12):
        fundus(tmp_path / f"{i}.png", i)
        grade = 4 if i >= 10 else i % 2
        rows.append({"file": f"{i}.png", "dr_grade": grade, "split": "test" if i >= 9 else "train"})
    csv = write_csv(tmp_path, rows)
    with pytest.warns(UserWarning) as rec:
        table = byo.from_csv(csv, "file", "dr_grade", ordinal="dr_grade", size=32)
    msg = " ".join(str(w.message) for w in rec)
    assert "class '4' of 'dr_grade' is in the test split (2 images) but not in train" in msg
    assert len(table) == 12  # reported, not dropped


def test_load_takes_a_csv_or_a_folder_and_an_unknown_name_points_to_them(tmp_path):
    csv = graded_set(tmp_path)
    table = data.load(str(csv), image_col="image", label_col="dr_grade", patient_col="patient_id", size=32,
                      n_train=5)
    assert "dr_grade" in table.tasks and (table.labels["split"] == "train").sum() == 5
    folder = tmp_path / "folders"
    for c in ("healthy", "glaucoma"):
        for i in range(4):
            fundus(folder / c / f"{i}.png", i)
    assert data.load(folder, size=32).classes["label"] == ["glaucoma", "healthy"]
    with pytest.raises(datasets.DatasetError) as err:
        data.load("labels_typo")
    msg = str(err.value)
    assert "from_csv" in msg and "from_folder" in msg and "helpers.data.load('labels.csv'" in msg
    with pytest.raises(datasets.DatasetError, match="no such CSV file"):
        data.load(str(tmp_path / "nope.csv"), image_col="image", label_col="dr_grade")
    with pytest.raises(datasets.DatasetError, match="image_col=.*columns"):  # what to pass, and the columns
        data.load(str(csv))


def test_a_csv_keeps_its_column_names_ordinal_columns_and_a_row_filter(tmp_path):
    csv = graded_set(tmp_path)
    table = byo.from_csv(csv, "image", "dr_grade", patient_col="patient_id", ordinal="dr_grade", size=32)
    assert table.tasks == {"dr_grade": "ordinal"} and table.classes["dr_grade"] == ["0", "1", "2", "3", "4"]
    assert {"image", "dr_grade", "patient_id", "eye", "split"} <= set(table.labels.columns)
    given = pd.read_csv(csv).set_index("image")
    assert (table.labels.set_index("image")["dr_grade"] == given.loc[table.labels["image"], "dr_grade"]).all()
    left = byo.from_csv(csv, "image", "dr_grade", where="eye == 'left'", size=32)
    assert len(left) == 12 and set(left.labels["eye"]) == {"left"}
    callable_ = byo.from_csv(csv, "image", "dr_grade", where=lambda df: df["dr_grade"] < 2, size=32)
    assert set(callable_.labels["dr_grade"]) <= {0, 1}
    with pytest.raises(datasets.DatasetError, match="where='eyes == 1' failed.*columns"):
        byo.from_csv(csv, "image", "dr_grade", where="eyes == 1", size=32)
    with pytest.raises(datasets.DatasetError, match=r"ordinal=\['eye'\] names no label column"):
        byo.from_csv(csv, "image", "dr_grade", ordinal="eye", size=32)
    named = byo.from_csv(csv, "image", "eye", classes=["left", "right"], size=32)
    assert named.tasks == {"eye": "single"} and list(named.labels["eye"][:2]) == [0, 1]
    with pytest.raises(datasets.DatasetError, match="unknown label"):
        byo.from_csv(csv, "image", "eye", classes=["left"], size=32)


def multi_label_set(folder, n=30):
    rows = []
    for i in range(n):
        fundus(folder / f"{i}.png", i)
        rows.append({"file": f"{i}.png", "drusen": i % 2, "haemorrhage": (i // 2) % 2, "exudate": int(i % 3 == 0),
                     "split": "test" if i % 5 == 0 else "valid" if i % 5 == 1 else "train"})
    return write_csv(folder, rows)


def test_probe_handles_a_multi_label_table(tmp_path):
    csv = multi_label_set(tmp_path)
    labels = ["drusen", "haemorrhage", "exudate"]
    table = byo.from_csv(csv, "file", labels, size=32)
    assert table.tasks == {c: "multi" for c in labels} and table.target(labels).shape == (30, 3)
    rng = np.random.default_rng(0)
    y = table.target(labels)
    feats = {s: np.c_[y[table.split_index(s)] * 3, rng.normal(size=(len(table.split_index(s)), 5))]
             for s in ("train", "valid", "test")}  # features that carry the labels
    res = evaluation.probe(feats, table, labels)
    for kind in ("linear", "knn"):
        per = res[kind]["per_label"]
        assert set(per) == set(labels)
        for m in ("auroc", "balanced_accuracy"):
            assert res[kind][m] == pytest.approx(np.mean([per[c][m] for c in labels]))
    assert res["linear"]["auroc"] > 0.9
    bad = pd.read_csv(csv)
    bad.loc[3, "exudate"] = 2
    bad.to_csv(csv, index=False)
    with pytest.raises(datasets.DatasetError, match="'exudate' must hold 0 or 1.*'2'.*CSV line"):
        byo.from_csv(csv, "file", labels, size=32)


def test_from_folder_and_its_errors(tmp_path, data_root):
    for cls in ("healthy", "glaucoma"):
        for i in range(5):
            fundus(tmp_path / "mine" / cls / f"{i}.png", i)
    (tmp_path / "mine" / "glaucoma" / "bad.png").write_bytes(b"\x89PNG broken")
    with pytest.warns(UserWarning, match="1 of 11 image files could not be read.*glaucoma/bad.png"):
        table = byo.from_folder(tmp_path / "mine", size=32)
    assert table.classes["label"] == ["glaucoma", "healthy"] and len(table) == 10
    assert "glaucoma/bad.png" in (data_root / "byo" / "mine-unreadable.txt").read_text()
    (tmp_path / "empty").mkdir()
    with pytest.raises(datasets.DatasetError, match="holds no images"):
        datasets.from_folder(tmp_path / "empty")  # still importable from helpers.datasets


def test_a_folder_split_by_patient_pattern_puts_no_patient_in_two_splits(tmp_path, capsys):
    for p in range(20):
        for eye in ("left", "right"):  # one eye healthy, one glaucomatous, for some patients
            cls = "glaucoma" if (p % 3 == 0 and eye == "right") else "healthy"
            fundus(tmp_path / "eyes" / cls / f"{p}_{eye}.png", p)
    by_file = byo.from_folder(tmp_path / "eyes", size=32)
    assert "by file" in capsys.readouterr().out
    by_patient = byo.from_folder(tmp_path / "eyes", size=32, patient_pattern=r"^(\d+)_", label_col="glaucoma")
    assert "by patient" in capsys.readouterr().out
    assert (by_patient.labels.groupby("patient_id")["split"].nunique() == 1).all()
    assert by_patient.classes == {"glaucoma": ["glaucoma", "healthy"]}
    leaked = by_file.labels.assign(p=by_file.labels["file"].str.extract(r"(\d+)_")[0])
    assert (leaked.groupby("p")["split"].nunique() > 1).any()  # the bug it fixes: split by file leaks
    with pytest.raises(datasets.DatasetError, match="needs exactly one"):
        byo.from_folder(tmp_path / "eyes", patient_pattern=r"\d+")
    with pytest.raises(datasets.DatasetError, match=r"finds no patient id in 40 of 40 file names: glaucoma/"):
        byo.from_folder(tmp_path / "eyes", patient_pattern=r"^patient(\d+)")


def test_ids_without_extension_and_missing_files_are_named(tmp_path):
    """The APTOS layout: train.csv beside train_images/, ids without an extension."""
    ids = [f"{i:012x}" for i in range(10)]
    for i, s in enumerate(ids):
        fundus(tmp_path / "train_images" / f"{s}.png", i)
    csv = write_csv(tmp_path, [{"id_code": s, "diagnosis": i % 3} for i, s in enumerate(ids)], "train.csv")
    for ext in (None, ".png", "png"):
        table = data.load(str(csv), image_col="id_code", label_col="diagnosis", image_dir="train_images", ext=ext,
                          size=32)
        assert len(table) == 10 and list(table.labels["id_code"]) == ids
    with pytest.raises(datasets.DatasetError) as err:  # the documented recipe without image_dir
        byo.from_csv(csv, "id_code", "diagnosis", size=32)
    msg = str(err.value)
    assert str(tmp_path / ids[0]) in msg and "image_dir=" in msg and "ext=" in msg
    with pytest.raises(datasets.DatasetError) as err:
        byo.from_csv(csv, "id_code", "diagnosis", image_dir="train_images", ext=".jpg", size=32)
    assert str(tmp_path / "train_images" / f"{ids[0]}.jpg") in str(err.value)
    (tmp_path / "train_images" / f"{ids[3]}.png").unlink()
    with pytest.warns(UserWarning) as rec:
        table = byo.from_csv(csv, "id_code", "diagnosis", image_dir="train_images", size=32)
    msg = " ".join(str(w.message) for w in rec)
    assert "1 of 10 image files could not be read" in msg and ids[3] in msg and "not found" in msg
    assert len(table) == 9


def test_corrupt_images_are_named_counted_and_listed_outside_the_image_folder(tmp_path, data_root):
    rows, study = [], tmp_path / "study"
    for i in range(15):
        path = study / "imgs" / f"{i}.png"
        if i < 7:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"\x89PNG broken" if i % 2 else io.BytesIO(b"x" * 50).getvalue())
        else:
            fundus(path, i)
        rows.append({"file": f"imgs/{i}.png", "label": ["a", "b"][i % 2]})
    csv = write_csv(study, rows)
    before = sorted(p.name for p in study.rglob("*"))
    with pytest.warns(UserWarning) as rec:
        table = byo.from_csv(csv, "file", "label", size=32)
    msg = next(str(w.message) for w in rec if "could not be read" in str(w.message))
    assert "7 of 15 image files could not be read" in msg and "and 2 more" in msg
    assert sum(f"imgs/{i}.png (" in msg for i in range(7)) == 5  # five named, with the reason
    log = data_root.resolve() / "byo" / "labels-unreadable.txt"
    assert f"full list in {log}" in msg
    listed = log.read_text()
    assert all(f"imgs/{i}.png\t" in listed for i in range(7)) and "imgs/7.png" not in listed
    assert sorted(p.name for p in study.rglob("*")) == before  # nothing written in the user's folder
    assert len(table) == 8


def test_read_images_swallows_only_unreadable_files(tmp_path):
    fundus(tmp_path / "ok.png", 0)

    def bug():
        raise RuntimeError("a bug, not a bad file")
    with pytest.raises(RuntimeError, match="a bug"):
        byo.read_images([tmp_path / "ok.png", bug], ["ok", "bug"], 16)
    imgs, kept, bad = byo.read_images([tmp_path / "ok.png", tmp_path / "gone.png", lambda: b"junk"],
                                      ["ok", "gone", "junk"], 16)
    assert imgs.shape == (1, 16, 16, 3) and kept == [0]
    assert bad == [("gone", "not found"), ("junk", "not an image file Pillow can read")]


def test_a_new_user_brings_60_graded_images_through_the_documented_path(tmp_path):
    """The page's recipe, as a new user follows it: load the CSV, train-ready dataloaders, a probe."""
    csv = graded_set(tmp_path / "my_study", n_patients=30)  # 60 images, two eyes of 30 patients
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean set loads without a single warning
        table = data.load(str(csv), image_col="image", label_col="dr_grade", patient_col="patient_id",
                          ordinal="dr_grade", size=32, seed=0)
    assert len(table) == 60 and table.tasks == {"dr_grade": "ordinal"} and table.name == "labels"
    assert (table.labels.groupby("patient_id")["split"].nunique() == 1).all()
    dls = data.dataloaders(table, target="dr_grade", bs=8, size=32, device="cpu")
    xb, yb = dls.train.one_batch()
    assert xb.shape == (8, 3, 32, 32) and yb.max() <= 4
    rng = np.random.default_rng(0)
    feats = {s: rng.normal(size=(len(table.split_index(s)), 16)) for s in ("train", "valid", "test")}
    res = evaluation.probe(feats, table, "dr_grade")
    assert 0 <= res["linear"]["balanced_accuracy"] <= 1 and "quadratic_kappa" in res["linear"]
    assert re.fullmatch(r"[0-9a-f]{16}", table.fingerprint())
