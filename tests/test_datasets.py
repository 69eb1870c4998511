"""Real-dataset path, offline: fixtures in each source's format served from 127.0.0.1."""
import dataclasses
import hashlib
import io
import os
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import data, datasets, downloads
from fixtures_http import FileServer


def fundus_png(seed: int, size: int = 48) -> bytes:
    """A small fundus-like picture: a bright disc on black, so the FOV crop has something to find."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    inside = (xx - size / 2) ** 2 + (yy - size / 2) ** 2 < (size * 0.4) ** 2
    img = np.zeros((size, size, 3), np.uint8)
    img[inside] = (rng.integers(150, 255), rng.integers(50, 120), 30)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def medmnist_npz(n=(12, 4, 6), size=28, grey=False) -> bytes:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, k in zip(("train", "val", "test"), n):
        shape = (k, size, size) if grey else (k, size, size, 3)
        arrays[f"{split}_images"] = rng.integers(0, 255, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 5, (k, 1))
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


@pytest.fixture
def registry(monkeypatch):
    """Point RetinaMNIST's 64-px file at our fixture's checksum; the mirror env var at the server."""
    def use(files: dict, server: FileServer):
        monkeypatch.setenv(downloads.MIRROR_ENV, server.url)
        for name, blob in files.items():
            for key, d in list(datasets.REGISTRY.items()):
                new = tuple(datasets.RemoteFile(f.name, f.url, md5(blob) if f.md5 else None, f.size)
                            if f.name == name else f for f in d.files)
                monkeypatch.setitem(datasets.REGISTRY, key, datasets.DatasetInfo(**{**d.__dict__, "files": new}))
    return use


def test_download_prepare_load_medmnist(tmp_path, registry):
    blob = medmnist_npz(size=64)
    with FileServer({"retinamnist_64.npz": blob}) as srv:
        registry({"retinamnist_64.npz": blob}, srv)
        paths = datasets.download("retinamnist", tmp_path, files=["retinamnist_64.npz"], progress=False)
    assert paths[0].read_bytes() == blob and not list(tmp_path.rglob("*.part"))
    table = data.load("retinamnist", root=tmp_path, size=32, seed=0)
    assert table.images.shape == (22, 32, 32, 3) and table.images.dtype == np.uint8
    assert table.labels["split"].value_counts().to_dict() == {"train": 12, "test": 6, "valid": 4}
    assert table.tasks == {"dr_grade": "ordinal"} and len(table.classes["dr_grade"]) == 5
    sub = data.load("retinamnist", root=tmp_path, size=32, n_train=5, n_valid=2, n_test=3)
    assert len(sub) == 10
    dls = data.dataloaders(sub, "dr_grade", bs=4, size=32, device="cpu")
    assert dls.train.one_batch()[0].shape == (4, 3, 32, 32)


def test_octmnist_grey_images_become_rgb(tmp_path):
    raw = datasets.raw_dir("octmnist", tmp_path)
    raw.mkdir(parents=True)
    (raw / "octmnist_64.npz").write_bytes(medmnist_npz(size=64, grey=True))
    table = datasets.load_dataset("octmnist", root=tmp_path, size=64)
    assert table.images.shape[1:] == (64, 64, 3) and "oct_class" in table.labels


def test_resume_after_an_interrupted_transfer(tmp_path):
    blob = bytes(range(256)) * 400
    with FileServer({"f.bin": blob}) as srv:
        srv.cut["f.bin"] = 30000
        dest = tmp_path / "f.bin"
        with pytest.raises(downloads.OfflineError, match="resume"):
            downloads.fetch(f"{srv.url}/f.bin", dest, md5(blob), progress=False)
        part = tmp_path / "f.bin.part"
        assert part.exists() and part.stat().st_size == 30000 and not dest.exists()
        downloads.fetch(f"{srv.url}/f.bin", dest, md5(blob), progress=False)
        assert srv.requests[-1] == ("f.bin", "bytes=30000-")
    assert dest.read_bytes() == blob and not part.exists()


def test_checksum_mismatch_removes_the_partial_file(tmp_path):
    with FileServer({"f.bin": b"tampered" * 100}) as srv:
        with pytest.raises(downloads.ChecksumError) as err:
            downloads.fetch(f"{srv.url}/f.bin", tmp_path / "f.bin", md5(b"original"), progress=False)
    assert md5(b"original") in str(err.value) and md5(b"tampered" * 100) in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_offline_names_the_url_and_the_manual_alternative(tmp_path):
    with FileServer({}) as srv:
        url = srv.url
    with pytest.raises(downloads.OfflineError) as err:  # the server is gone: connection refused
        downloads.fetch(f"{url}/x.npz", tmp_path / "x.npz", progress=False, timeout=5)
    assert f"{url}/x.npz" in str(err.value) and "by hand" in str(err.value)


def test_never_touches_files_outside_its_cache(tmp_path, registry):
    blob = medmnist_npz()
    keep = tmp_path / "notes.txt"
    keep.write_text("mine")
    with FileServer({"retinamnist.npz": b"wrong bytes"}) as srv:
        registry({"retinamnist.npz": blob}, srv)
        with pytest.raises(downloads.ChecksumError):
            datasets.download("retinamnist", tmp_path, files=["retinamnist.npz"], progress=False)
    assert keep.read_text() == "mine"
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["notes.txt"]


def jsiec_raw(root, per_class: int = 4) -> None:
    """A JSIEC-like archive (one folder per class) with one broken file, put where download.py puts it."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for c, cls in enumerate(["0.0.Normal", "1.0.DR1", "29.0.Blur fundus"]):
            for i in range(per_class):
                zf.writestr(f"1000images/{cls}/img{i}.jpg", fundus_png(c * 10 + i))
        zf.writestr("1000images/1.0.DR1/broken.jpg", b"not an image")
    raw = datasets.raw_dir("jsiec", root)
    raw.mkdir(parents=True)
    (raw / "1000images.zip").write_bytes(buf.getvalue())


def test_jsiec_folders_zip_and_corrupted_images(tmp_path):
    jsiec_raw(tmp_path)
    folder = datasets.prepared_dir("jsiec", 32, tmp_path)
    with pytest.warns(UserWarning, match="1 of 13 image files could not be read and were skipped: "
                                         r"1000images/1.0.DR1/broken.jpg \(not an image file Pillow can read\); "
                                         f"full list in {folder / 'unreadable.txt'}"):
        table = datasets.load_dataset("jsiec", root=tmp_path, size=32)
    assert len(table) == 12 and sorted(table.labels["jsiec_class"].unique()) == [0, 1, 2]
    assert "1000images/1.0.DR1/broken.jpg\t" in (folder / "unreadable.txt").read_text()


def _prepare_at_each_signal(barrier, root, results, rounds):
    """One of the racing processes: at each round's signal (both ready, the test too), prepare."""
    warnings.simplefilter("ignore")
    for _ in range(rounds):
        barrier.wait()
        try:
            results.put(("ok", str(datasets.prepare("jsiec", 32, root))))
        except BaseException as exc:  # noqa: BLE001 - the test reports whatever the process met
            results.put(("error", repr(exc)))


def test_two_processes_preparing_at_once_both_succeed_and_leave_one_whole_folder(tmp_path):
    """Two real processes run prepare on the same dataset at the same instant (a barrier), three times: first
    into an empty cache, then over a finished folder. Both succeed, the folder is whole and right, and no
    temporary is left. (Before the fix, every such race failed one process, and some deleted the result.)"""
    import multiprocessing
    jsiec_raw(tmp_path, per_class=6)
    folder = datasets.prepared_dir("jsiec", 32, tmp_path)
    ctx, rounds = multiprocessing.get_context("spawn"), 3
    barrier, results = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_prepare_at_each_signal, args=(barrier, tmp_path, results, rounds), daemon=True)
             for _ in range(2)]
    for proc in procs:
        proc.start()
    try:
        _check_rounds(barrier, results, procs, rounds, folder)
    finally:
        for proc in procs:
            proc.join(timeout=60)
            if proc.is_alive():  # a failed round leaves it waiting at the barrier
                proc.terminate()


def _check_rounds(barrier, results, procs, rounds, folder):
    first = None
    for _ in range(rounds):
        barrier.wait(timeout=300)
        outcomes = [results.get(timeout=300) for _ in procs]
        assert outcomes == [("ok", str(folder))] * 2
        assert sorted(f.name for f in folder.iterdir()) == ["images.npy", "labels.csv", "unreadable.txt"]
        labels, images = pd.read_csv(folder / "labels.csv"), np.load(folder / "images.npy")
        assert len(labels) == len(images) == 18 and images.shape[1:] == (32, 32, 3)
        first = labels if first is None else first
        pd.testing.assert_frame_equal(labels, first)  # the same seed gives the same preparation every time
        left = sorted(f.name for f in folder.parent.iterdir() if f.name not in ("raw", folder.name))
        assert all(name.endswith(".lock") for name in left), left  # no .partial, .old or .tmp


def test_a_failed_rewrite_keeps_the_finished_folder(tmp_path, monkeypatch):
    jsiec_raw(tmp_path)
    with pytest.warns(UserWarning):
        folder = datasets.prepare("jsiec", 32, tmp_path)
    before = {f.name: f.read_bytes() for f in folder.iterdir()}

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(datasets.np, "save", disk_full)
    with pytest.raises(datasets.DatasetError) as err:
        datasets.prepare("jsiec", 32, tmp_path)
    assert f"cannot write to {folder}" in str(err.value) and "No space left" in str(err.value)
    assert {f.name: f.read_bytes() for f in folder.iterdir()} == before  # nothing lost
    assert not [f for f in folder.parent.iterdir() if f.name.endswith((".partial", ".old"))]


def test_an_unwritable_data_folder_says_what_to_do(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file: nothing can be created below it")
    monkeypatch.setenv("RETINA_DATA", str(blocker / "data"))
    with pytest.raises(datasets.DatasetError) as err:
        datasets.download("retinamnist", files=["retinamnist.npz"], progress=False)
    msg = str(err.value)
    assert f"cannot write to {blocker / 'data'}" in msg and "set RETINA_DATA or pass root=/--root" in msg
    assert blocker.read_text().startswith("a file")
    # prepare, with its raw files readable but the cache not writable (as a read-only RETINA_DATA does)
    jsiec_raw(tmp_path)

    def denied(path):
        raise PermissionError(13, "Permission denied", str(path))
    monkeypatch.setattr(datasets, "lock", denied)
    with pytest.raises(datasets.DatasetError, match="cannot write to .*set RETINA_DATA or pass root=/--root"):
        datasets.prepare("jsiec", 32, tmp_path)
    import runpy
    monkeypatch.setattr(sys, "argv", ["prepare.py", "jsiec", "--size", "32", "--root", str(tmp_path)])
    with pytest.raises(SystemExit) as code:
        runpy.run_path("data_scripts/prepare.py", run_name="__main__")
    assert code.value.code == 1 and "set RETINA_DATA or pass root=/--root" in capsys.readouterr().err
    monkeypatch.setattr(datasets, "prepare", lambda *a: denied("elsewhere"))  # an OSError the library let through
    with pytest.raises(SystemExit) as code:
        runpy.run_path("data_scripts/prepare.py", run_name="__main__")
    assert code.value.code == 1 and "pass --root to a writable folder" in capsys.readouterr().err
    assert (datasets.raw_dir("jsiec", tmp_path) / "1000images.zip").exists()


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="permissions do not bind root")
def test_a_read_only_data_folder_really_refused(tmp_path):
    jsiec_raw(tmp_path)
    os.chmod(tmp_path / "jsiec", 0o555)
    try:
        with pytest.raises(datasets.DatasetError, match="cannot write to .*set RETINA_DATA"):
            datasets.prepare("jsiec", 32, tmp_path)
    finally:
        os.chmod(tmp_path / "jsiec", 0o755)


def test_download_leaves_the_skip_to_fetch_and_passes_the_expected_size(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(datasets, "fetch", lambda url, dest, md5=None, **kw: calls.append((dest.name, kw)) or dest)
    files = (datasets.RemoteFile("a.npz", "http://x/a.npz", None, 0, bytes=123),
             datasets.RemoteFile("b.npz", "http://x/b.npz"))
    entry = datasets.REGISTRY["retinamnist"]
    monkeypatch.setitem(datasets.REGISTRY, "retinamnist", dataclasses.replace(entry, files=files))
    datasets.download("retinamnist", tmp_path, progress=False)
    (tmp_path / "retinamnist" / "raw" / "a.npz").write_bytes(b"x" * 123)  # already there: fetch decides
    datasets.download("retinamnist", tmp_path, progress=False)
    assert calls == [("a.npz", {"progress": False, "size": 123}), ("b.npz", {"progress": False})] * 2


def test_deepdrid_grades_each_eye_reads_both_csvs_and_splits_by_patient(tmp_path):
    """The archive as published (tools/fixture_hub.py's copy of its layout): an image's grade is its own eye's, the
    training and validation CSVs both count, and a patient's four images share one split."""
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import fixture_hub
    raw = datasets.raw_dir("deepdrid", tmp_path)
    raw.mkdir(parents=True)
    (raw / "DeepDRiD.zip").write_bytes(fixture_hub.gen_deepdrid()())
    table = datasets.load_dataset("deepdrid", root=tmp_path, size=32)
    labels = table.labels.set_index("image_id")
    assert len(labels) == 12 * 4 and set(labels["source_csv"]) == {"regular-fundus-training.csv",
                                                                    "regular-fundus-validation.csv"}
    for p in (1, 9):  # left eye grade p % 5, right eye (p + 2) % 5, patient grade the worse of the two
        assert labels.loc[f"{p}_l1", "dr_grade"] == labels.loc[f"{p}_l2", "dr_grade"] == p % 5
        assert labels.loc[f"{p}_r2", "dr_grade"] == (p + 2) % 5
        assert labels.loc[f"{p}_l1", "patient_dr_grade"] == max(p % 5, (p + 2) % 5)
    assert (table.labels.groupby("patient_id")["split"].nunique() == 1).all()  # no patient in two splits


def test_deepdrid_row_without_its_eye_grade_is_reported_not_guessed(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        folder = "regular_fundus_images/regular-fundus-training"
        rows = ["patient_id,image_id,image_path,left_eye_DR_Level,right_eye_DR_Level,patient_DR_Level"]
        for p in range(6):
            for iid in (f"{p}_l1", f"{p}_r1"):
                zf.writestr(f"{folder}/Images/{p}/{iid}.jpg", fundus_png(p))
                left, right = (2, "") if "_l" in iid else ("", "" if p == 0 else 1)
                rows.append(f"{p},{iid},\\x\\{iid}.jpg,{left},{right},2")
        zf.writestr(f"{folder}/regular-fundus-training.csv", "\n".join(rows))
    raw = datasets.raw_dir("deepdrid", tmp_path)
    raw.mkdir(parents=True)
    (raw / "DeepDRiD.zip").write_bytes(buf.getvalue())
    with pytest.warns(UserWarning, match="0_r1"):
        table = datasets.load_dataset("deepdrid", root=tmp_path, size=32)
    assert len(table) == 11 and "0_r1" not in set(table.labels["image_id"])


def test_truncated_archive_is_reported(tmp_path):
    raw = datasets.raw_dir("jsiec", tmp_path)
    raw.mkdir(parents=True)
    (raw / "1000images.zip").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(datasets.DatasetError, match="not a complete zip"):
        datasets.prepare("jsiec", 32, tmp_path)


def test_not_downloaded_gives_the_exact_command(tmp_path):
    with pytest.raises(datasets.DatasetError) as err:
        data.load("retinamnist", root=tmp_path, size=64)
    assert f"python data_scripts/download.py retinamnist --root {tmp_path}" in str(err.value)
    assert "prepare.py retinamnist --size 64" in str(err.value)


def test_unknown_options_are_refused_with_the_valid_ones(tmp_path):
    with pytest.raises(ValueError) as err:
        data.load("retinamnist", root=tmp_path, size=64, balanced=True)  # a SynthRetina option
    msg = str(err.value)
    assert "'balanced'" in msg and "retinamnist" in msg
    assert "valid options: root, size, n_train, n_valid, n_test, seed, download_missing" in msg
    with pytest.raises(ValueError, match="'sizee'"):
        datasets.load_dataset("octmnist", root=tmp_path, sizee=64)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(datasets.DatasetError) as err:
        data.load("retinamnistt")
    assert "retinamnist" in str(err.value) and "synthretina" in str(err.value)


def test_registry_table_and_cli(capsys):
    import runpy
    import sys
    table = datasets.registry_table()
    assert {"retinamnist", "octmnist", "deepdrid", "jsiec", "papila", "idrid", "aptos2019"} <= set(table["name"])
    sys.argv = ["download.py", "--list"]
    with pytest.raises(SystemExit) as code:
        runpy.run_path("data_scripts/download.py", run_name="__main__")
    assert code.value.code == 0 and "retinamnist" in capsys.readouterr().out


def test_download_errors_are_one_family_and_the_cli_reports_them(tmp_path, monkeypatch, capsys):
    for err in (downloads.ChecksumError, downloads.OfflineError, downloads.GatedError):
        assert issubclass(err, downloads.DownloadError) and not issubclass(err, datasets.DatasetError)
    with FileServer({}) as srv:
        with pytest.raises(downloads.DownloadError, match="HTTP 404"):
            downloads.fetch(f"{srv.url}/missing.npz", tmp_path / "missing.npz", progress=False)
        monkeypatch.setenv(downloads.MIRROR_ENV, srv.url)  # the mirror lacks the file: a 404
        import runpy
        import sys
        monkeypatch.setattr(sys, "argv", ["download.py", "retinamnist", "--root", str(tmp_path),
                                          "--files", "retinamnist.npz"])
        with pytest.raises(SystemExit) as code:
            runpy.run_path("data_scripts/download.py", run_name="__main__")
    assert code.value.code == 1 and "HTTP 404" in capsys.readouterr().err


def test_the_gpu_profile_downloads_on_first_use_through_the_installed_package(tmp_path, registry):
    """The Colab path: `data.load` with the real world's options fetches, verifies and prepares by itself."""
    from helpers import profiles
    blobs = {"retinamnist.npz": medmnist_npz(size=28), "retinamnist_64.npz": medmnist_npz(size=64),
             "retinamnist_128.npz": medmnist_npz(size=128), "retinamnist_224.npz": medmnist_npz(size=224)}
    options = profiles.load("gpu").data.options
    assert options == {"download_missing": True}
    with FileServer(blobs) as srv:
        registry(blobs, srv)
        with pytest.raises(datasets.DatasetError, match="download_missing=True"):
            data.load("retinamnist", root=tmp_path / "other", size=32)  # without the option: what to do, said
        table = data.load("retinamnist", root=tmp_path, size=32, seed=0, **options)
    assert table.images.shape == (22, 32, 32, 3)
    again = data.load("retinamnist", root=tmp_path, size=32, seed=0, **options)  # cached: no server needed
    assert np.array_equal(again.images, table.images)
