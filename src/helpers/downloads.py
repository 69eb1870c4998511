"""Downloads for data and weights: resumable, verified, safe when two processes fetch at once.

Explained on the "Data and weights" appendix page. :mod:`helpers.datasets`
fetches the registry's files with :func:`fetch`, :mod:`helpers.weights` the
official checkpoints (Hugging Face files go through ``huggingface_hub`` instead).

``pooch`` does the caching, the MD5 check and the atomic move into place; the
book adds what pooch lacks: an HTTP ``Range`` resume from a stable ``<file>.part``
(:class:`Resumable`, a pooch downloader), a size check for files without a
published checksum (recorded in a hidden ``.<file>.size`` beside them), a
cross-process lock (``filelock``) per destination, and errors that say what to
do. Set ``RETINA_DATA_MIRROR`` to fetch every dataset file from
``<mirror>/<file name>`` (a lab mirror, or the tests' local server). Every
error raised here is a :class:`DownloadError`.
"""
from __future__ import annotations

import hashlib
import http.client
import importlib
import json
import os
from pathlib import Path
from urllib.parse import urlsplit

import pooch
import requests
import urllib3
from tqdm.auto import tqdm

from .env import atomic_write, cache_dir, lock

MIRROR_ENV = "RETINA_DATA_MIRROR"
HOST_ENV = "RETINA_HOST_OVERRIDE"  # a stand-in for every non-Hugging-Face host: <base>/<host>/<path> (tools/fixture_hub.py)
USER_AGENT = "retina-fm-book (+https://github.com/retina-fm-book/retina-fm-book)"


class DownloadError(RuntimeError):
    """A download problem with a message that says what to do (the base of the errors below)."""


class ChecksumError(DownloadError):
    """The downloaded bytes do not match the published checksum (the partial file is removed)."""


class OfflineError(DownloadError):
    """The host could not be reached, or the transfer broke off (run the same command to resume)."""


class GatedError(DownloadError):
    """The host wants an account, accepted terms and a token (401/403)."""


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    """The MD5 hex digest of a file, read in chunks."""
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def mirror_url(name: str, url: str) -> str:
    """``<mirror>/<name>`` when ``RETINA_DATA_MIRROR`` is set, else ``url`` (the file's home)."""
    mirror = os.environ.get(MIRROR_ENV)
    return f"{mirror.rstrip('/')}/{name}" if mirror else url


def url_for(url: str) -> str:
    """``url``, or its copy on the stand-in named by ``RETINA_HOST_OVERRIDE`` (``<base>/<host>/<path>?<query>``):
    the real layout of every host kept under one base (a lab mirror of several hosts, the tests' fixture hub)."""
    base = os.environ.get(HOST_ENV)
    if not base or not url.startswith(("http://", "https://")) or url.startswith(base):
        return url
    parts = urlsplit(url)
    return f"{base.rstrip('/')}/{parts.netloc}{parts.path}" + (f"?{parts.query}" if parts.query else "")


_STAND_IN_MD5: dict = {}


def stand_in_md5(url: str) -> str | None:
    """The MD5 the stand-in host publishes for ``url`` (``<base>/MD5SUMS.json``), ``None`` without one: a mirror
    that holds other bytes than the original (the tests' small fixtures) says so, instead of failing the check."""
    base = os.environ.get(HOST_ENV)
    if not base:
        return None
    if base not in _STAND_IN_MD5:
        try:
            resp = requests.get(f"{base.rstrip('/')}/MD5SUMS.json", timeout=30, headers={"User-Agent": USER_AGENT})
            _STAND_IN_MD5[base] = resp.json() if resp.status_code == 200 else {}
        except (ValueError, *transfer_errors()):
            _STAND_IN_MD5[base] = {}
    return _STAND_IN_MD5[base].get(url.split("?")[0])


def _size_record(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.size")


def verified(dest: Path, md5: str | None = None, size: int | None = None) -> bool:
    """Whether ``dest`` is there and matches ``md5``, else ``size``, else the size recorded when it was fetched.

    A file with none of the three (put there by hand) is taken as it is.
    """
    dest = Path(dest)
    if not dest.is_file():
        return False
    if md5:
        return md5sum(dest) == md5
    if size is None and _size_record(dest).is_file():
        try:
            size = int(json.loads(_size_record(dest).read_text())["bytes"])
        except (OSError, ValueError, KeyError, TypeError):
            return False  # an unreadable record: fetch again rather than trust
    return size is None or dest.stat().st_size == size


def transfer_errors() -> tuple:
    """The errors of a host out of reach or a transfer cut: sockets, http.client (IncompleteRead,
    RemoteDisconnected…), urllib3, and httpx's as ``huggingface_hub`` uses it (requests' errors are OSErrors)."""

    found = [OSError, http.client.HTTPException, urllib3.exceptions.HTTPError]
    for name in ("httpx", "httpx2"):
        try:
            found.append(importlib.import_module(name).TransportError)
        except (ImportError, AttributeError):
            pass
    return tuple(found)


class Resumable:
    """A pooch downloader that resumes from ``<dest>.part`` with HTTP Range, checks the size, then hands the bytes over.

    ``size`` is the expected byte count (``None``: the server's); ``verifiable`` says whether an MD5 will check the
    result (without it and without any size the transfer is refused). ``total`` is the size received.
    """

    def __init__(self, dest: Path, token=None, size=None, verifiable=False, progress=True, timeout=60.0, chunk=1 << 16):
        self.dest, self.part = dest, dest.with_name(dest.name + ".part")
        self.token, self.size, self.verifiable, self.total = token, size, verifiable, None
        self.progress, self.timeout, self.chunk = progress, timeout, chunk

    def _get(self, url: str, start: int):
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity",  # byte offsets must be the file's
                   **({"Range": f"bytes={start}-"} if start else {})}
        if self.token:  # requests drops it when a redirect leaves the host
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            resp = requests.get(url, headers=headers, stream=True, timeout=self.timeout)
        except transfer_errors() as exc:
            raise OfflineError(f"could not reach {url} ({type(exc).__name__}). Without internet, download the file "
                               f"by hand on another machine and put it at {self.dest}") from None
        resp.raw.enforce_content_length = False  # keep the bytes of a cut body; the size check below tells
        return resp

    def __call__(self, url: str, output_file: str, pooch_obj=None) -> None:
        have = self.part.stat().st_size if self.part.exists() else 0
        resp = self._get(url, have)
        if resp.status_code == 416:  # nothing after `have`: complete only if `have` is the whole file
            full = resp.headers.get("Content-Range", "").rpartition("/")[2]
            resp.close()
            whole = int(full) if full.isdigit() else self.size
            if whole is not None and have == whole and self.size in (None, whole):
                return self._hand_over(url, whole, output_file)
            self.part.unlink()  # a stale or foreign part: start from zero
            have, resp = 0, self._get(url, 0)
        with resp:
            if resp.status_code in (401, 403):
                raise GatedError(f"{url} answered {resp.status_code} (access refused): this host wants an account "
                                 "or accepted terms for this file. Open the URL in a browser to see what it asks "
                                 f"for, download the file by hand and put it at {self.dest}")
            if resp.status_code == 429:
                wait = resp.headers.get("Retry-After")
                raise OfflineError(f"{url} answered 429 (too many requests): the host is limiting downloads. Wait "
                                   f"{wait + ' s' if wait else 'a few minutes'} and run the same command again; "
                                   f"{have} bytes already received are kept")
            if resp.status_code == 404:
                raise DownloadError(f"{url} answered HTTP 404 (not found): the file has moved or the URL is wrong. Check "
                                    f"the dataset's page (or {MIRROR_ENV} if you use a mirror)")
            if resp.status_code >= 400:
                raise DownloadError(f"{url} answered HTTP {resp.status_code}; check the URL (or {MIRROR_ENV}), "
                                    "or try again later")
            if resp.status_code == 206:
                full = resp.headers.get("Content-Range", "").rpartition("/")[2]
                total = int(full) if full.isdigit() else None
            else:  # 200: the whole file (a server that ignores Range starts again)
                have, length = 0, resp.headers.get("Content-Length")
                total = int(length) if length is not None else None
            if self.size is not None and total is not None and total != self.size:
                raise DownloadError(f"{url} offers {total} bytes but {self.dest.name} has {self.size}: the server "
                                    f"holds another version. Check the URL (or {MIRROR_ENV}); nothing was changed")
            expected = self.size if self.size is not None else total
            if expected is None and not self.verifiable:
                raise DownloadError(f"{url} sends no size and {self.dest.name} has no checksum, so a cut transfer "
                                    f"could not be told from a whole one: download it by hand and put it at "
                                    f"{self.dest}, or pass size=<bytes> to fetch")
            self._stream(url, resp, have, expected)
        self._hand_over(url, expected, output_file)

    def _hand_over(self, url: str, expected: int | None, output_file: str) -> None:
        got = self.part.stat().st_size
        if expected is not None and got < expected:
            raise OfflineError(f"the transfer of {url} stopped at {got} of {expected} bytes; run the same command "
                               f"again to resume from {got} bytes")
        if expected is not None and got > expected:
            self.part.unlink()
            raise DownloadError(f"{url} sent {got} bytes, more than the {expected} expected; the partial file was "
                                "removed: run the same command again")
        self.total = got
        os.replace(self.part, output_file)  # pooch checks the MD5 and moves it into place

    def _stream(self, url, resp, have, expected):
        with open(self.part, "ab" if have else "wb") as out, \
                tqdm(total=expected, initial=have, unit="B", unit_scale=True, desc=self.dest.name,
                     disable=not self.progress, leave=False) as bar:
            try:
                for block in resp.iter_content(self.chunk):
                    out.write(block)
                    bar.update(len(block))
            except transfer_errors() as exc:
                out.flush()
                raise OfflineError(f"the transfer of {url} broke off ({type(exc).__name__}); run the same command "
                                   f"again to resume from {self.part.stat().st_size} bytes") from None


def _dest_lock(dest: Path):
    """A cross-process lock for ``dest``, kept in ``$RETINA_CACHE/locks`` so that the data folder holds only data."""
    key = hashlib.sha1(str(dest.resolve()).encode()).hexdigest()[:16]
    return lock(cache_dir("locks") / f"{dest.name}-{key}")


def fetch(url: str, dest: Path, md5: str | None = None, token: str | None = None, progress: bool = True,
          timeout: float = 60.0, chunk: int = 1 << 16, size: int | None = None) -> Path:
    """``dest``, downloaded from ``url`` unless it is already there and verifies (``md5``, else ``size``/recorded size).

    Resumable (``dest.part`` + Range), locked against a second process fetching the same file, moved into place
    only once verified. Errors: :class:`ChecksumError` (expected vs got; nothing kept), :class:`OfflineError` (no
    network, or a cut transfer: the part stays to resume), :class:`GatedError` (401/403), else :class:`DownloadError`.
    """
    if os.environ.get(HOST_ENV):
        md5 = (stand_in_md5(url) or md5) if md5 else None
        url = url_for(url)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _dest_lock(dest):
        if verified(dest, md5, size):  # already here, or another process has just fetched it
            return dest
        dest.unlink(missing_ok=True)  # under its final name but not matching: fetched again, not trusted
        _size_record(dest).unlink(missing_ok=True)
        downloader = Resumable(dest, token, size, bool(md5), progress, timeout, chunk)
        logger = pooch.get_logger()
        level = logger.level
        logger.setLevel("WARNING")  # the book's own progress bar says what is downloaded
        try:
            pooch.retrieve(url, f"md5:{md5}" if md5 else None, fname=dest.name, path=dest.parent,
                           downloader=downloader)
        except ValueError as exc:  # pooch's hash check; it has removed the bytes
            raise ChecksumError(f"checksum mismatch for {dest.name} ({exc}) Nothing was kept: run the same "
                                f"command again; if it fails again, the file at {url} has changed (try another "
                                f"mirror with {MIRROR_ENV})") from None
        finally:
            logger.setLevel(level)
        if not md5:
            atomic_write(_size_record(dest), lambda p: p.write_text(json.dumps({"bytes": downloader.total,
                                                                                "url": url})))
    return dest
