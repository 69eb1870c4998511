"""helpers.downloads against bad transfers from 127.0.0.1: each gets a message that says what to do, loses nothing."""
import hashlib
import subprocess
import sys
import textwrap

import pytest

from helpers import downloads
from fixtures_http import FileServer

BLOB = bytes(range(256)) * 400  # 102 400 bytes


@pytest.fixture(autouse=True)
def own_cache(tmp_path_factory, monkeypatch):
    """The download locks live in $RETINA_CACHE/locks: a temporary one, outside the folders the tests inspect."""
    monkeypatch.setenv("RETINA_CACHE", str(tmp_path_factory.mktemp("cache")))


def md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


def leftovers(folder, keep=("f.bin", ".f.bin.size")):
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


def test_a_cut_chunked_transfer_says_resume_and_resumes(tmp_path):
    with FileServer({"f.bin": BLOB}) as srv:
        srv.chunked.add("f.bin")
        srv.cut["f.bin"] = 30000
        dest = tmp_path / "f.bin"
        with pytest.raises(downloads.OfflineError, match="run the same command again to resume from 30000 bytes"):
            downloads.fetch(f"{srv.url}/f.bin", dest, md5(BLOB), progress=False)
        assert (tmp_path / "f.bin.part").stat().st_size == 30000 and not dest.exists()
        downloads.fetch(f"{srv.url}/f.bin", dest, md5(BLOB), progress=False)
        assert srv.requests[-1] == ("f.bin", "bytes=30000-")
    assert dest.read_bytes() == BLOB and leftovers(tmp_path) == []


def test_no_checksum_no_size_no_length_is_refused_untouched(tmp_path):
    with FileServer({"f.bin": BLOB}) as srv:
        srv.no_length.add("f.bin")
        with pytest.raises(downloads.DownloadError, match="by hand.*size=") as err:
            downloads.fetch(f"{srv.url}/f.bin", tmp_path / "f.bin", progress=False)
    assert "no checksum" in str(err.value) and list(tmp_path.iterdir()) == []


def test_no_checksum_cut_without_length_is_caught_by_the_expected_size(tmp_path):
    dest = tmp_path / "f.bin"
    with FileServer({"f.bin": BLOB}) as srv:
        srv.no_length.add("f.bin")
        srv.cut["f.bin"] = 30000
        with pytest.raises(downloads.OfflineError, match="stopped at 30000 of 102400 bytes.*resume"):
            downloads.fetch(f"{srv.url}/f.bin", dest, size=len(BLOB), progress=False)
        assert not dest.exists() and (tmp_path / "f.bin.part").stat().st_size == 30000
        downloads.fetch(f"{srv.url}/f.bin", dest, size=len(BLOB), progress=False)
        assert dest.read_bytes() == BLOB
        n = len(srv.requests)
        downloads.fetch(f"{srv.url}/f.bin", dest, progress=False)  # the recorded size verifies it: no request
        assert len(srv.requests) == n
    assert leftovers(tmp_path) == []


def test_a_truncated_file_under_its_final_name_is_fetched_again(tmp_path):
    dest = tmp_path / "f.bin"
    with FileServer({"f.bin": BLOB}) as srv:
        downloads.fetch(f"{srv.url}/f.bin", dest, progress=False)  # Content-Length: its size is recorded
        assert '"bytes": 102400' in (tmp_path / ".f.bin.size").read_text()
        dest.write_bytes(BLOB[:5000])  # what the old code could leave after a cut
        downloads.fetch(f"{srv.url}/f.bin", dest, progress=False)
        assert dest.read_bytes() == BLOB
        dest.write_bytes(BLOB[:5000])  # no record, but the caller knows the size
        (tmp_path / ".f.bin.size").unlink()
        downloads.fetch(f"{srv.url}/f.bin", dest, size=len(BLOB), progress=False)
    assert dest.read_bytes() == BLOB and leftovers(tmp_path) == []


def test_the_wrong_size_is_refused_and_the_part_kept(tmp_path):
    (tmp_path / "f.bin.part").write_bytes(BLOB[:1000])
    with FileServer({"f.bin": BLOB}) as srv:
        with pytest.raises(downloads.DownloadError, match="offers 102400 bytes but f.bin has 99.*nothing was changed"):
            downloads.fetch(f"{srv.url}/f.bin", tmp_path / "f.bin", size=99, progress=False)
    assert (tmp_path / "f.bin.part").read_bytes() == BLOB[:1000] and not (tmp_path / "f.bin").exists()


def test_416_means_complete_only_at_the_full_size(tmp_path):
    dest, part = tmp_path / "f.bin", tmp_path / "f.bin.part"
    with FileServer({"f.bin": BLOB}) as srv:
        part.write_bytes(b"stale " * 30000)  # longer than the file: the server answers 416 bytes */102400
        downloads.fetch(f"{srv.url}/f.bin", dest, progress=False)
        assert srv.requests[-2:] == [("f.bin", "bytes=180000-"), ("f.bin", None)]  # discarded, fetched from zero
        assert dest.read_bytes() == BLOB
        dest.unlink()
        part.write_bytes(BLOB)  # complete already: 416, nothing more to transfer
        downloads.fetch(f"{srv.url}/f.bin", dest, md5(BLOB), progress=False)
        assert srv.requests[-1] == ("f.bin", "bytes=102400-")
    assert dest.read_bytes() == BLOB and leftovers(tmp_path) == []


def test_a_token_is_not_forwarded_to_another_host(tmp_path):
    with FileServer({"cdn/f.bin": BLOB}) as cdn, FileServer({"f.bin": BLOB}, token="secret") as hub:
        hub.redirect["f.bin"] = f"{cdn.url}/cdn/f.bin"
        downloads.fetch(f"{hub.url}/f.bin", tmp_path / "f.bin", md5(BLOB), token="secret", progress=False)
    assert hub.auth[0][2] == "Bearer secret"
    assert cdn.auth and all(auth is None for _, _, auth in cdn.auth)
    assert (tmp_path / "f.bin").read_bytes() == BLOB


def test_a_mismatch_removes_everything_and_says_what_to_do(tmp_path):
    with FileServer({"f.bin": b"tampered" * 100}) as srv:
        with pytest.raises(downloads.ChecksumError, match="run the same command again") as err:
            downloads.fetch(f"{srv.url}/f.bin", tmp_path / "f.bin", md5(BLOB), progress=False)
    assert md5(BLOB) in str(err.value) and list(tmp_path.iterdir()) == []


def test_two_processes_fetching_one_file(tmp_path):
    blob = bytes(range(256)) * 4096  # 1 MiB, paced so the two transfers overlap
    script = textwrap.dedent("""
        import sys
        from helpers.downloads import fetch
        url, dest, md5 = sys.argv[1:]
        print(fetch(url, dest, md5 if md5 != "-" else None, progress=False))
    """)
    for name, checksum in (("f.bin", md5(blob)), ("g.bin", "-")):
        with FileServer({name: blob}) as srv:
            srv.pace = 0.01
            args = [sys.executable, "-c", script, f"{srv.url}/{name}", str(tmp_path / name), checksum]
            procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                     for _ in range(2)]
            results = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
        assert [r[2] for r in results] == [0, 0], [r[1] for r in results]
        assert (tmp_path / name).read_bytes() == blob
        assert [r for r in srv.requests if r[0] == name] == [(name, None)]  # the second waited, then found it
    assert sorted(p.name for p in tmp_path.iterdir()) == [".g.bin.size", "f.bin", "g.bin"]


def test_mirror_url(monkeypatch):
    monkeypatch.delenv(downloads.MIRROR_ENV, raising=False)
    assert downloads.mirror_url("a.npz", "https://home/a.npz") == "https://home/a.npz"
    monkeypatch.setenv(downloads.MIRROR_ENV, "http://lab/mirror/")
    assert downloads.mirror_url("a.npz", "https://home/a.npz") == "http://lab/mirror/a.npz"


def test_the_cli_says_where_it_cannot_write(tmp_path, monkeypatch, capsys):
    import runpy
    blocked = tmp_path / "a-file"
    blocked.write_text("a file where the data folder should be (chmod does not stop root)")
    with FileServer({"retinamnist.npz": BLOB}) as srv:
        monkeypatch.setenv(downloads.MIRROR_ENV, srv.url)
        monkeypatch.setattr(sys, "argv", ["download.py", "retinamnist", "--root", str(blocked),
                                          "--files", "retinamnist.npz"])
        with pytest.raises(SystemExit) as code:
            runpy.run_path("data_scripts/download.py", run_name="__main__")
    err = capsys.readouterr().err
    assert code.value.code == 1 and f"cannot write to {blocked}" in err and "set RETINA_DATA" in err
    assert blocked.read_text().startswith("a file")
    from helpers import datasets  # any OSError on the way (a read-only folder, a full disk) is said the same way

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied", "/data/retinamnist/raw/retinamnist.npz.part")
    monkeypatch.setattr(datasets, "download", read_only)
    with pytest.raises(SystemExit) as code:
        runpy.run_path("data_scripts/download.py", run_name="__main__")
    err = capsys.readouterr().err
    assert code.value.code == 1 and "cannot write to /data/retinamnist/raw/retinamnist.npz.part" in err
    assert "set RETINA_DATA or pass --root to a writable folder" in err
