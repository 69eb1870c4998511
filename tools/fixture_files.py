"""The fixture files of the real sources: the committed manifest and one generator per file format.

``tools/real_sources.json`` lists every file the ``gpu`` and ``full`` profiles fetch (real URL, size, hash,
where that fact comes from) and names the generator of :data:`GENERATORS` that makes a small faithful copy of
it: the same name, repository layout, container format and key layout, tiny contents.
:func:`build_fixtures` makes them; ``tools/fixture_hub.py`` serves them on 127.0.0.1.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

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


