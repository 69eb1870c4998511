"""Faithful copies of the real sources, served on 127.0.0.1: the hubs the gpu profile downloads from, without them.

The committed manifest (``tools/real_sources.json``) records, for every file the ``gpu`` and ``full`` profiles
fetch, its real URL, size and hash as published (``null`` where the host publishes none), where that fact comes
from, and which generator makes a small fixture of it: the same name, the same repository layout, the same
container format and key layout, tiny contents. :class:`Hub` serves the fixtures under their real paths:

* Hugging Face at ``<hub>/hf`` (set ``HF_ENDPOINT``): ``/{repo}/resolve/{revision}/{file}`` with the headers
  ``huggingface_hub`` reads (``X-Repo-Commit``, ``ETag``, ``X-Linked-Size``), gated repositories answering 401
  ``GatedRepo`` without the repository's token;
* every other host at ``<hub>/<host>/<path>`` (set ``RETINA_HOST_OVERRIDE``; :func:`helpers.downloads.url_for`),
  with HTTP Range, and the fixtures' own MD5s at ``<hub>/MD5SUMS.json`` (a stand-in publishes its checksums).

A request for a URL the manifest does not list is answered 404 and recorded in :attr:`Hub.unlisted`: the tests
fail on it. Faults are injected per URL (:attr:`Hub.faults`: a status code, or ``("cut", n)`` to send n bytes).

    python tools/fixture_hub.py serve --profile rehearsal --port 8765 --env hub.env   # tools/gpu_check.sh uses it
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from fixture_files import (  # noqa: F401 (the hub's users read these names here)
    COMMIT, GENERATORS, HF_BASE, REAL_SIZES_ENV, build_fixtures, gen_deepdrid, hf_url, listed_urls, manifest)

# --------------------------------------------------------------------------- the server

class LocalServer:
    """An HTTP server on 127.0.0.1 (``port`` 0: a free one) answering with ``handler`` in a background thread,
    while a ``with`` block runs; the fixture hub and the download tests' file server are both one."""

    def __init__(self, handler, port: int = 0):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


class Hub(LocalServer):
    """The fixture hub: ``files`` ``{real url: bytes}`` served under their real paths (see the module docstring).

    ``tokens`` ``{hf repo: token}`` gates a repository; ``faults`` ``{real url: status | ("cut", n)}`` answers a
    fault once per entry (a list pops one per request); ``log`` holds ``(method, real url, status)`` per request
    and ``unlisted`` the real URLs asked for that the manifest does not list.
    """

    def __init__(self, files: dict, tokens: dict | None = None, port: int = 0):
        self.files = {u.split("?")[0]: b for u, b in files.items()}
        self.tokens, self.faults, self.log, self.unlisted = dict(tokens or {}), {}, [], []
        self.listed = listed_urls()
        self.hf_home = None  # set by the caller, else an empty folder made on first use of environment()
        self.absent = set(manifest().get("probed_absent", []))
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                hub._answer(self, head=True)

            def do_GET(self):
                hub._answer(self, head=False)

        super().__init__(Handler, port)

    def env(self) -> dict:
        """The environment that points the book at this hub (a kernel started with it downloads from here)."""
        return {"HF_ENDPOINT": f"{self.url}/hf", "RETINA_HF_ENDPOINT": f"{self.url}/hf",
                "RETINA_HOST_OVERRIDE": self.url, "HF_HUB_DISABLE_TELEMETRY": "1",
                "HF_HUB_DISABLE_XET": "1", "HF_HUB_ETAG_TIMEOUT": "30", "HF_HUB_DOWNLOAD_TIMEOUT": "60"}

    ENV_NAMES = ("HF_TOKEN", "HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE", "HF_ENDPOINT", "RETINA_HF_ENDPOINT",
                 "RETINA_HOST_OVERRIDE", "RETINA_DATA_MIRROR", "RETINA_GITHUB_ENDPOINT", "HF_HUB_DISABLE_TELEMETRY",
                 "HF_HUB_DISABLE_XET", "HF_HUB_ETAG_TIMEOUT", "HF_HUB_DOWNLOAD_TIMEOUT", "TRANSFORMERS_OFFLINE")

    @contextlib.contextmanager
    def environment(self, hf_home: str | Path | None = None):
        """Point this process (and every kernel it starts) at the hub while the block runs: the variables of
        :meth:`env`, no token, ``HF_HOME`` at ``hf_home`` (default: the hub's own empty folder); restored after."""
        saved = {k: os.environ.get(k) for k in self.ENV_NAMES}
        for k in self.ENV_NAMES:
            os.environ.pop(k, None)
        os.environ.update(self.env())
        if hf_home is None and self.hf_home is None:
            self.hf_home = Path(tempfile.mkdtemp(prefix="fixture-hub-hf-"))
        os.environ["HF_HOME"] = str(hf_home or self.hf_home)
        try:
            yield self
        finally:
            for k, v in saved.items():
                os.environ.pop(k, None) if v is None else os.environ.update({k: v})

    def _real_url(self, path: str) -> str:
        """The real URL a request stands for; a Hugging Face file asked for at this hub's commit (the revision the
        libraries take from ``X-Repo-Commit``) is the same file as at ``main``."""
        path = path.split("?")[0]
        if path.startswith("/hf/"):
            return HF_BASE + path[3:].replace(f"/resolve/{COMMIT}/", "/resolve/main/")
        host, _, rest = path.lstrip("/").partition("/")
        return f"https://{host}/{rest}"

    def _repo_files(self, repo: str) -> dict:
        """``{file: entry}`` of the manifest's Hugging Face repository ``repo`` (``{}``: not in the manifest)."""
        prefix = f"{HF_BASE}/{repo}/resolve/"
        return {u[len(prefix):].split("/", 1)[1]: e for u, e in self.listed.items() if u.startswith(prefix)}

    def _hf_api(self, h, url: str, head: bool):
        """The two hub API calls the libraries make: a model's info (``siblings``) and a tree listing."""
        rest = url[len(HF_BASE + "/api/models/"):].split("/")
        repo, tail = "/".join(rest[:2]), rest[2:]
        files = self._repo_files(repo)
        if not files:
            self.unlisted.append(url)
            self.log.append((h.command, url, 404))
            return self._send(h, 404, head=head, X_Error_Code="RepoNotFound")
        if tail[:1] == ["revision"] or not tail:
            body = {"id": repo, "modelId": repo, "sha": COMMIT, "private": False,
                    "gated": "manual" if repo in self.tokens else False,
                    "siblings": [{"rfilename": f} for f in sorted(files)]}
        elif tail[:1] == ["tree"]:
            folder = "/".join(tail[2:])
            inside = [f for f in sorted(files) if not folder or f.startswith(folder + "/")]
            if folder and not inside:
                self.log.append((h.command, url, 404))
                return self._send(h, 404, head=head, X_Error_Code="EntryNotFound")
            body = [{"type": "file", "path": f, "size": len(self.files.get(f"{HF_BASE}/{repo}/resolve/main/{f}", b"")),
                     "oid": COMMIT} for f in inside]
        else:
            self.unlisted.append(url)
            self.log.append((h.command, url, 404))
            return self._send(h, 404, head=head)
        self.log.append((h.command, url, 200))
        return self._send(h, 200, json.dumps(body).encode(), head, Content_Type="application/json")

    def _send(self, h, code, body=b"", head=False, **headers):
        h.send_response(code)
        h.send_header("X-Repo-Commit", COMMIT)
        for k, v in headers.items():
            h.send_header(k.replace("_", "-"), str(v))
        if "Content_Length" not in headers:
            h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if not head and body:
            h.wfile.write(body)

    def _answer(self, h, head: bool):
        if h.path == "/MD5SUMS.json":
            body = json.dumps({u: hashlib.md5(b).hexdigest() for u, b in self.files.items()}).encode()
            return self._send(h, 200, body, head, Content_Type="application/json")
        url = self._real_url(h.path)
        auth = h.headers.get("Authorization")
        if url.startswith(HF_BASE + "/api/models/"):
            return self._hf_api(h, url, head)
        if url not in self.listed:
            if url not in self.absent:
                self.unlisted.append(url)
            self.log.append((h.command, url, 404))
            return self._send(h, 404, head=head, X_Error_Code="EntryNotFound")
        repo = url[len(HF_BASE) + 1:].split("/resolve/")[0] if url.startswith(HF_BASE) else None
        if repo in self.tokens and auth != f"Bearer {self.tokens[repo]}":
            self.log.append((h.command, url, 401))
            return self._send(h, 401, head=head, X_Error_Code="GatedRepo",
                              X_Error_Message="Access to model is restricted. You must have access to it.")
        fault = self.faults.get(url)
        if isinstance(fault, list):
            fault = fault.pop(0) if fault else None
        else:
            self.faults.pop(url, None)
        if isinstance(fault, int):
            self.log.append((h.command, url, fault))
            return self._send(h, fault, head=head, **({"Retry_After": 1} if fault == 429 else {}))
        if url not in self.files:
            self.log.append((h.command, url, 404))
            return self._send(h, 404, head=head, X_Error_Code="EntryNotFound")
        body = self.files[url]
        etag = f'"{hashlib.sha256(body).hexdigest()}"'
        start, code, extra = 0, 200, {}
        rng = h.headers.get("Range")
        if rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0] or 0)
            if start >= len(body):
                self.log.append((h.command, url, 416))
                return self._send(h, 416, head=head, Content_Range=f"bytes */{len(body)}")
            code, extra = 206, {"Content_Range": f"bytes {start}-{len(body) - 1}/{len(body)}"}
        self.log.append((h.command, url, code))
        payload = body[start:]
        headers = dict(ETag=etag, X_Linked_Etag=etag, X_Linked_Size=len(body), Accept_Ranges="bytes",
                       Content_Length=len(payload), **extra)
        if isinstance(fault, tuple) and fault[0] == "cut" and not head:
            h.send_response(code)
            for k, v in headers.items():
                h.send_header(k.replace("_", "-"), str(v))
            h.end_headers()
            h.wfile.write(payload[:fault[1]])
            h.wfile.flush()
            h.close_connection = True
            return
        self._send(h, code, b"" if head else payload, head, **headers)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="serve the fixtures until interrupted")
    s.add_argument("--profile", default="rehearsal", help="whose architectures the weight fixtures take")
    s.add_argument("--port", type=int, default=0)
    s.add_argument("--env", type=Path, help="write the environment (KEY=value lines) that points at the hub")
    s.add_argument("--cache", type=Path, default=None, help="keep generated fixtures here")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from helpers import profiles
    profiles.load(args.profile)
    with Hub(build_fixtures(cache=args.cache), port=args.port) as hub:
        lines = "".join(f"{k}={v}\n" for k, v in hub.env().items())
        if args.env:
            args.env.write_text(lines)
        print(lines, end="", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return 0


if __name__ == "__main__":
    raise SystemExit(main())
