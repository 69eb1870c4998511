"""A local HTTP file server on 127.0.0.1 for the download tests (Range, cut transfers, tokens, a fake hub)."""
from __future__ import annotations

import hashlib
import time
from http.server import BaseHTTPRequestHandler

from fixture_hub import LocalServer

FAKE_COMMIT = hashlib.sha1(b"retina-book test commit").hexdigest()


class FileServer(LocalServer):
    """Serves ``files`` (name -> bytes) to GET and HEAD.

    ``cut[name] = n`` sends only n bytes of the next full request (the connection then closes early);
    ``token`` requires ``Authorization: Bearer <token>`` (else 401 with the hub's ``X-Error-Code: GatedRepo``);
    ``chunked`` (names) answers with ``Transfer-Encoding: chunked``, ``no_length`` (names) with neither that nor a
    ``Content-Length`` (the body ends when the connection closes); ``redirect[name] = url`` answers 302 to ``url``
    (with the hub's ``X-Linked-*`` headers); ``pace`` sleeps that many seconds per 16 KiB sent. Every answer carries
    the headers ``huggingface_hub`` needs (``ETag``, ``X-Repo-Commit``). ``requests`` logs (name, Range) of each GET,
    ``auth`` logs (method, name, Authorization) of every request.
    """

    def __init__(self, files: dict[str, bytes], token: str | None = None):
        self.files, self.token, self.cut, self.requests = dict(files), token, {}, []
        self.chunked, self.no_length, self.redirect, self.pace, self.auth = set(), set(), {}, 0.0, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self.answer(head=True)

            def do_GET(self):
                self.answer(head=False)

            def status(self, code: int, **headers):
                self.send_response(code)
                self.send_header("X-Repo-Commit", FAKE_COMMIT)
                for k, v in headers.items():
                    self.send_header(k.replace("_", "-"), str(v))

            def answer(self, head: bool):
                name = self.path.split("?")[0].lstrip("/")
                server.auth.append((self.command, name, self.headers.get("Authorization")))
                if not head:
                    server.requests.append((name, self.headers.get("Range")))
                if server.token and self.headers.get("Authorization") != f"Bearer {server.token}":
                    self.status(401, X_Error_Code="GatedRepo", Content_Length=0)
                    return self.end_headers()
                if name not in server.files:
                    self.status(404, Content_Length=0)
                    return self.end_headers()
                body = server.files[name]
                etag = f'"{hashlib.md5(body).hexdigest()}"'
                if name in server.redirect:
                    self.status(302, Location=server.redirect[name], X_Linked_Etag=etag, X_Linked_Size=len(body),
                                Content_Length=0)
                    return self.end_headers()
                start = 0
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes="):
                    start = int(rng[6:].split("-")[0])
                    if start >= len(body):
                        self.status(416, Content_Range=f"bytes */{len(body)}", Content_Length=0)
                        return self.end_headers()
                    self.status(206, Content_Range=f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.status(200)
                self.send_header("ETag", etag)
                payload = body[start:]
                if name in server.chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                elif name not in server.no_length:
                    self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if head:
                    return
                n = server.cut.pop(name, None)
                self.send_body(payload if n is None else payload[:n], chunked=name in server.chunked,
                               complete=n is None)
                if n is not None or name in server.no_length:
                    self.close_connection = True

            def send_body(self, data: bytes, chunked: bool, complete: bool):
                for i in range(0, len(data), 1 << 14):
                    piece = data[i:i + (1 << 14)]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                    if server.pace:
                        self.wfile.flush()
                        time.sleep(server.pace)
                if chunked and complete:
                    self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

        super().__init__(Handler)
