"""Downloads for data and weights: resumable, checksum-verified, with errors that say what to do.

Explained on the "Data and weights" appendix page. :mod:`helpers.datasets`
fetches the registry's files with :func:`fetch`, :mod:`helpers.weights` the
official checkpoints.

Every download is written under a temporary name (``*.part``), resumed with an
HTTP ``Range`` request when interrupted, and renamed only after its checksum
matches. Set ``RETINA_DATA_MIRROR`` to fetch every dataset file from
``<mirror>/<file name>`` instead of its home URL (a lab mirror, or the tests'
local server). Every error raised here is a :class:`DownloadError`.
"""
from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

MIRROR_ENV = "RETINA_DATA_MIRROR"
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


def fetch(url: str, dest: Path, md5: str | None = None, token: str | None = None, progress: bool = True,
          timeout: float = 60.0, chunk: int = 1 << 16) -> Path:
    """Download ``url`` to ``dest``: resumable (``dest.part`` + Range), verified, renamed at the end.

    A checksum mismatch removes the partial file and raises :class:`ChecksumError`
    (expected vs got); no network raises :class:`OfflineError` naming the URL and
    the manual alternative; 401/403 raises :class:`GatedError`; any other HTTP
    error a :class:`DownloadError`.
    """
    from tqdm.auto import tqdm
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise GatedError(f"{url} answered {exc.code}: these files need an account, accepted terms and a "
                             "token (pass token=... or set HF_TOKEN)") from None
        if exc.code == 416:  # the part file is already complete
            resp = None
        else:
            raise DownloadError(f"{url} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise OfflineError(f"could not reach {url} ({getattr(exc, 'reason', exc)}). Without internet, download "
                           f"the file by hand on another machine and put it at {dest}") from None
    if resp is not None:
        with resp:
            resumed = resp.status == 206
            if not resumed:
                have = 0
            total = resp.headers.get("Content-Length")
            total = int(total) + have if total is not None else None
            with open(part, "ab" if resumed else "wb") as out, \
                    tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=dest.name,
                         disable=not progress, leave=False) as bar:
                while True:
                    try:
                        block = resp.read(chunk)
                    except (TimeoutError, OSError) as exc:
                        raise OfflineError(f"the transfer of {url} broke off ({exc}); run the same command "
                                           f"again to resume from {part.stat().st_size} bytes") from None
                    if not block:
                        break
                    out.write(block)
                    bar.update(len(block))
            if total is not None and part.stat().st_size < total:
                raise OfflineError(f"the transfer of {url} stopped at {part.stat().st_size} of {total} bytes; "
                                   "run the same command again to resume")
    if md5:
        got = md5sum(part)
        if got != md5:
            part.unlink()
            raise ChecksumError(f"checksum mismatch for {dest.name}: expected md5 {md5}, got {got}; "
                                "the partial file was removed — download again")
    os.replace(part, dest)
    return dest
