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
import io
import json
import os
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

MANIFEST_PATH = Path(__file__).with_name("real_sources.json")
HF_BASE = "https://huggingface.co"
COMMIT = hashlib.sha1(b"retina-book fixture hub").hexdigest()


def manifest() -> dict:
    """The committed manifest: ``{"sources": [...], "probed_absent": [...]}`` (see the file's ``about``)."""
    return json.loads(MANIFEST_PATH.read_text())


def listed_urls(m: dict | None = None) -> dict:
    """``{url without query: entry}`` for every file of the manifest."""
    m = m or manifest()
    return {u.split("?")[0]: dict(f, source=s["name"]) for s in m["sources"] for f in s["files"]
            for u in [f["url"]]}


def hf_url(repo: str, file: str, revision: str = "main") -> str:
    return f"{HF_BASE}/{repo}/resolve/{revision}/{file}"


# --------------------------------------------------------------------------- fixtures (one generator per format)

def _torch_bytes(obj) -> bytes:
    import torch
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _safetensors_bytes(state: dict, metadata: dict | None = None) -> bytes:
    from safetensors.torch import save
    return save({k: v.detach().contiguous() for k, v in state.items()}, metadata=metadata)


def _timm_state(arch: str, **kwargs) -> dict:
    import timm
    import torch

    from helpers.profiles import architecture
    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, **{**kwargs, **architecture(arch)})
    return model.state_dict()


REAL_SIZES_ENV = "FIXTURE_HUB_REAL_SIZES"  # set (tools/gpu_check.py): datasets with their published image counts
RETINAMNIST_N = (1080, 120, 400)
_DRAWN: dict = {}


def _drawn(split: str, i: int):
    """SynthRetina's image ``i`` of ``split`` at 64 px and its DR grade (drawn once for all four sizes)."""
    if (split, i) not in _DRAWN:
        from helpers.synthretina import sample
        img, lab = sample(i, seed=7, size=64, split={"val": "valid"}.get(split, split))[:2]
        _DRAWN[(split, i)] = (img, int(lab["dr_grade"]))
    return _DRAWN[(split, i)]


def gen_medmnist(size: int, n=(96, 32, 64)):
    """A MedMNIST v2 ``.npz``: ``{train,val,test}_{images,labels}``, uint8 images ``[N, s, s, 3]``, labels ``[N, 1]``
    (DR grades 0-4), drawn by SynthRetina so that the grades are visible; ``n`` images per split, or the real
    file's 1080/120/400 when ``$FIXTURE_HUB_REAL_SIZES`` is set."""
    def make():
        import numpy as np
        from PIL import Image

        arrays = {}
        for split, count in zip(("train", "val", "test"), RETINAMNIST_N if os.environ.get(REAL_SIZES_ENV) else n):
            imgs, labs = [], []
            for i in range(count):
                img, grade = _drawn(split, i)
                lab = {"dr_grade": grade}
                im = Image.fromarray(img).resize((size or 28, size or 28), Image.BICUBIC)
                imgs.append(np.asarray(im, dtype=np.uint8))
                labs.append(int(lab["dr_grade"]))
            arrays[f"{split}_images"] = np.stack(imgs)
            arrays[f"{split}_labels"] = np.asarray(labs, dtype=np.uint8).reshape(-1, 1)
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        return buf.getvalue()
    return make


def gen_timm(tag: str, kind: str = "safetensors"):
    """A timm hub repository file: ``model.safetensors`` (the state dict with the head the pretrained config names:
    1000 classes for ImageNet, none for DINO) or ``config.json``."""
    def make():
        import timm
        arch = tag.split(".")[0]
        classes = timm.models.get_pretrained_cfg(tag).num_classes
        if kind == "config":
            return json.dumps({"architecture": arch, "num_classes": classes, "pretrained_cfg": {}}).encode()
        return _safetensors_bytes(_timm_state(arch, num_classes=classes), {"format": "pt"})
    return make


def gen_retfound():
    """RETFound's ``.pth``: ``{"model": MAE encoder + decoder state}`` (the decoder and mask token are dropped on load)."""
    def make():
        import torch
        state = _timm_state("vit_large_patch16_224", num_classes=0, img_size=224)
        dim = state["cls_token"].shape[-1]
        state = dict(state)
        state["mask_token"] = torch.zeros(1, 1, 8)
        state["decoder_embed.weight"] = torch.zeros(8, dim)
        state["decoder_pred.weight"] = torch.zeros(16 * 16 * 3, 8)
        import argparse as _argparse
        return _torch_bytes({"model": state, "args": _argparse.Namespace(model="vit_large_patch16")})
    return make


def gen_retfound_green():
    """RETFound-Green's release asset: a plain state dict of timm's ``vit_small_patch14_reg4_dinov2`` at 392 px."""
    def make():
        return _torch_bytes(_timm_state("vit_small_patch14_reg4_dinov2", num_classes=0, img_size=392))
    return make


def gen_flair(kind: str):
    """FLAIR's hub repository: ``model.safetensors`` (both towers, FLAIR's key names) or ``config.json``."""
    def make():
        import torch

        from helpers.methods import flair
        if kind == "config":
            return json.dumps({"vision_type": "resnet_v1", "bert_type": "emilyalsentzer/Bio_ClinicalBERT",
                               "proj_dim": 512, "norm_features": True, "logit_scale_init_value": 0.07}).encode()
        torch.manual_seed(0)
        return _safetensors_bytes(flair.faithful_flair().state_dict(), {"format": "pt"})
    return make


_BERT_WORDS = ("no diabetic retinopathy mild moderate severe proliferative normal fundus healthy retina lesions "
               "few scattered microaneurysms haemorrhages hemorrhages exudates hard soft cotton wool spots drusen "
               "around the macula age related macular degeneration glaucoma optic disc cupping cup large "
               "neovascularization venous beading a an of with and in on is are image photograph").split()


def gen_bert(kind: str):
    """Bio_ClinicalBERT's repository: ``config.json`` (BERT-base, cased, 28,996 tokens) and ``vocab.txt`` (a small
    WordPiece vocabulary; ids stay below the model's vocabulary size)."""
    def make():
        if kind == "vocab":
            specials = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
            letters = [chr(c) for c in range(33, 127)] + ["##" + chr(c) for c in range(97, 123)]
            words = sorted(set(_BERT_WORDS) | {w.capitalize() for w in _BERT_WORDS})
            return ("\n".join(specials + letters + words) + "\n").encode()
        from helpers.methods.flair import bio_clinical_bert_config
        cfg = bio_clinical_bert_config().to_dict()
        cfg.update({"architectures": ["BertModel"], "model_type": "bert"})
        return json.dumps(cfg).encode()
    return make


def gen_flair_dictionary():
    """FLAIR's ``flair/modeling/dictionary.py``: a ``definitions = {...}`` literal (read with ast, never run)."""
    def make():
        from helpers.methods.flair import KNOWLEDGE
        defs = {name: list(descr) for task in KNOWLEDGE.values() for name, descr in task.items()}
        return ("# FLAIR's expert-knowledge dictionary (fixture)\ndefinitions = " + repr(defs) + "\n").encode()
    return make


DEEPDRID_TOP = "deepdrdoc-DeepDRiD-0657068"  # a Zenodo archive of a GitHub release: "<owner>-<repo>-<commit>/"
DEEPDRID_COLUMNS = ("patient_id,image_id,image_path,Overall quality,left_eye_DR_Level,right_eye_DR_Level,"
                    "patient_DR_Level,Clarity,Field definition,Artifact")


def gen_deepdrid(patients=(("training", range(1, 9)), ("validation", range(9, 13)))):
    """The DeepDRiD archive as the repository lays it out: ``regular_fundus_images/regular-fundus-<split>/`` with
    ``regular-fundus-<split>.csv`` (one row per image, the columns of :data:`DEEPDRID_COLUMNS`; an image's row
    holds its own eye's grade, the other eye's column empty) and ``Images/<patient>/<patient>_<l|r><1|2>.jpg``.
    The two eyes of a patient get different SynthRetina grades, so a per-patient label would be visibly wrong."""
    def make():
        import zipfile

        import numpy as np
        from PIL import Image

        from helpers.synthretina import sample
        buf, k = io.BytesIO(), 0
        with zipfile.ZipFile(buf, "w") as zf:
            for split, ids in patients:
                folder = f"regular_fundus_images/regular-fundus-{split}"
                rows = [DEEPDRID_COLUMNS]
                for p in ids:
                    shots = {}
                    for eye in ("l", "r"):
                        for shot in (1, 2):
                            img = sample(k, seed=11, size=48)[0]
                            shots[(eye, shot)] = np.asarray(img)
                            k += 1
                    grade = {"l": p % 5, "r": (p + 2) % 5}
                    for (eye, shot), img in shots.items():
                        image_id = f"{p}_{eye}{shot}"
                        b = io.BytesIO()
                        Image.fromarray(img).save(b, "JPEG")
                        zf.writestr(f"{DEEPDRID_TOP}/{folder}/Images/{p}/{image_id}.jpg", b.getvalue())
                        left, right = (grade["l"], "") if eye == "l" else ("", grade["r"])
                        path = "\\" + "\\".join([f"regular-fundus-{split}", "Images", str(p), image_id + ".jpg"])
                        rows.append(f"{p},{image_id},{path},1,{left},{right},{max(grade.values())},10,10,10")
                zf.writestr(f"{DEEPDRID_TOP}/{folder}/regular-fundus-{split}.csv", "\n".join(rows) + "\n")
        return buf.getvalue()
    return make


GENERATORS = {
    "medmnist-28": gen_medmnist(0), "medmnist-64": gen_medmnist(64), "medmnist-128": gen_medmnist(128),
    "medmnist-224": gen_medmnist(224),
    "timm-resnet50": gen_timm("resnet50.a1_in1k"), "timm-vit-s16": gen_timm("vit_small_patch16_224.dino"),
    "timm-vit-b16": gen_timm("vit_base_patch16_224.augreg2_in21k_ft_in1k"),
    "timm-config-resnet50": gen_timm("resnet50.a1_in1k", "config"),
    "timm-config-vit-s16": gen_timm("vit_small_patch16_224.dino", "config"),
    "timm-config-vit-b16": gen_timm("vit_base_patch16_224.augreg2_in21k_ft_in1k", "config"),
    "retfound-pth": gen_retfound(), "retfound-green-pth": gen_retfound_green(),
    "flair-safetensors": gen_flair("weights"), "flair-config": gen_flair("config"),
    "bert-config": gen_bert("config"), "bert-vocab": gen_bert("vocab"),
    "flair-dictionary": gen_flair_dictionary(), "deepdrid-zip": gen_deepdrid(),
}


def build_fixtures(names=None, cache: Path | None = None) -> dict:
    """``{url: bytes}`` for every manifest file with a generator (``names``: only those sources). The bytes depend on
    the loaded profile's architectures, so call :func:`helpers.profiles.load` first; ``cache`` keeps them on disk."""
    from helpers.profiles import ARCH_ENV
    out = {}
    tag = hashlib.sha1(((os.environ.get(ARCH_ENV) or "{}") + os.environ.get(REAL_SIZES_ENV, "")).encode()
                       ).hexdigest()[:10]
    for url, entry in listed_urls().items():
        if entry.get("fixture") is None or (names and entry["source"] not in names):
            continue
        path = Path(cache) / tag / hashlib.sha1(url.encode()).hexdigest() if cache else None
        if path is not None and path.is_file():
            out[url] = path.read_bytes()
            continue
        out[url] = GENERATORS[entry["fixture"]]()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
            tmp.write_bytes(out[url])
            os.replace(tmp, path)
    return out


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
