"""Official pretrained weights, loaded into timm encoders (gpu and full profiles).

Explained on the "Data and weights" appendix page; chapters call
:func:`pretrained_encoder`. Hugging Face files are fetched with
``huggingface_hub.hf_hub_download`` into Hugging Face's own cache (``HF_HOME`` /
``HF_HUB_CACHE``, shared with timm and the ``hf`` command; ``<cache>/hf`` when
``cache=`` is given); GitHub releases with :func:`helpers.downloads.fetch` into
``$RETINA_CACHE/weights/<name>/``. A file put by hand at
``$RETINA_CACHE/weights/<name>/<file>`` is used as it is. The caches are looked
at before any token is asked for, and ``HF_HUB_OFFLINE=1`` reads them only.
Checkpoints are read as safetensors or with ``torch.load(weights_only=True)``
(plus the harmless ``argparse.Namespace`` official checkpoints carry): nothing
downloaded is ever unpickled as arbitrary objects. Each loader maps the official
checkpoint's key names to timm's and reports missing and unexpected keys.

Gated weights (RETFound) need your token and the accepted terms of the model
page: pass ``token=...``, set ``HF_TOKEN`` or run ``hf auth login``. The hosts
can be redirected with ``RETINA_HF_ENDPOINT`` (else ``HF_ENDPOINT``) and
``RETINA_GITHUB_ENDPOINT`` (mirrors, or the tests' local servers). Every error
raised here is a :class:`helpers.downloads.DownloadError`.
"""
from __future__ import annotations

import argparse
import os
import pickle
import re
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

import timm
import torch
from huggingface_hub import constants, get_token, hf_hub_download, try_to_load_from_cache
from huggingface_hub.utils import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    are_progress_bars_disabled,
    disable_progress_bars,
    enable_progress_bars,
)
from safetensors import SafetensorError
from safetensors.torch import load_file

from .downloads import DownloadError, GatedError, OfflineError, fetch, transfer_errors
from .env import cache_dir
from .profiles import architecture
from .views import FUNDUS_MEAN, FUNDUS_STD

HF_ENV, GITHUB_ENV = "RETINA_HF_ENDPOINT", "RETINA_GITHUB_ENDPOINT"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SAFE_GLOBALS = [argparse.Namespace]  # what official checkpoints carry besides tensors (RETFound: its training args)


class WeightsError(DownloadError):
    """A weights problem that is not the transfer itself: an unknown name, a checkpoint refused as unsafe."""


@dataclass(frozen=True)
class WeightsInfo:
    name: str
    arch: str                 # timm model name
    host: str                 # "timm", "hf" or "github"
    path: str                 # repo/file on the host
    licence: str
    gated: bool
    img_size: int
    notes: str = ""
    mean: tuple = IMAGENET_MEAN  # the per-channel statistics the weights were trained with, on [0, 1] pixels
    std: tuple = IMAGENET_STD
    timm_kwargs: dict = field(default_factory=dict)  # how the official code builds the model (pooling…)
    alternative: str | None = None  # open weights a chapter uses instead when these are gated and no token is set


WEIGHTS = {
    "imagenet-resnet50": WeightsInfo("imagenet-resnet50", "resnet50", "timm", "resnet50.a1_in1k",
                                     "Apache-2.0 (timm)", False, 224, "timm's ImageNet-1k weights"),
    "imagenet-vit-b16": WeightsInfo("imagenet-vit-b16", "vit_base_patch16_224", "timm",
                                    "vit_base_patch16_224.augreg2_in21k_ft_in1k", "Apache-2.0 (timm)", False, 224,
                                    "timm's ImageNet-21k/1k weights"),
    "dino-vit-s16": WeightsInfo("dino-vit-s16", "vit_small_patch16_224", "timm", "vit_small_patch16_224.dino",
                                "Apache-2.0 (DINO, through timm)", False, 224,
                                "the DINO authors' self-supervised ViT-S/16 (ImageNet-1k, no labels); chapter 2"),
    "retfound-mae": WeightsInfo("retfound-mae", "vit_large_patch16_224", "hf",
                                "YukunZhou/RETFound_mae_natureCFP/RETFound_mae_natureCFP.pth",
                                "CC BY-NC 4.0", True, 224,
                                "gated: log in to Hugging Face, accept the model's terms, create a read token; "
                                "features pool the patch tokens (global_pool='avg', RETFound's own evaluation)",
                                timm_kwargs={"global_pool": "avg"}, alternative="retfound-green"),
    "retfound-green": WeightsInfo("retfound-green", "vit_small_patch14_reg4_dinov2", "github",
                                  "justinengelmann/RETFound_Green/releases/download/v0.1/retfoundgreen_statedict.pth",
                                  "see the RETFound-Green repository", False, 392,
                                  "normalisation mean = std = 0.5; global average pooling", (0.5,) * 3, (0.5,) * 3),
    "flair-resnet50": WeightsInfo("flair-resnet50", "resnet50", "hf", "jusiro2/FLAIR/model.safetensors",
                                  "Apache-2.0", False, 512,
                                  "vision tower only; the file name on the hub is not verified here; pixels in "
                                  "[0, 1], no mean/std normalisation (FLAIR's preprocess_image)", (0.0,) * 3, (1.0,) * 3),
}


def input_size(name: str) -> int:
    """The image side the weights ``name`` take (their ``img_size``, or the profile's rehearsal size)."""
    w = info(name)
    return int(_arch_override(w.arch).get("img_size", w.img_size))


def _arch_override(arch: str) -> dict:
    return architecture(arch)


def info(name: str) -> WeightsInfo:
    if name not in WEIGHTS:
        raise WeightsError(f"unknown weights {name!r}; weights: {', '.join(WEIGHTS)}")
    return WEIGHTS[name]


def weights_url(w: WeightsInfo) -> str:
    if w.host == "hf":
        repo_owner, repo_name, file = w.path.split("/", 2)
        base = os.environ.get(HF_ENV, "https://huggingface.co").rstrip("/")
        return f"{base}/{repo_owner}/{repo_name}/resolve/main/{file}"
    if w.host == "github":
        return os.environ.get(GITHUB_ENV, "https://github.com").rstrip("/") + "/" + w.path
    raise ValueError(f"{w.name} comes from timm, not from a URL")


def read_checkpoint(path: Path) -> dict:
    """A state dict from safetensors or a weights-only torch file (never arbitrary pickles).

    An object the book does not allow (see ``SAFE_GLOBALS``) is refused by name; a file torch cannot read is
    called corrupt, with the path to delete.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except SafetensorError as exc:
            raise WeightsError(f"{path} is corrupt or truncated ({exc}): delete it and download again") from None
    allow = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
    try:
        with allow(SAFE_GLOBALS) if allow else nullcontext():
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if found:
            raise WeightsError(f"{path} holds an object of type {found.group(1)}: this is not corruption, but the "
                               "book is refusing to unpickle it (unpickling can run code). Save the checkpoint's "
                               "state dict alone (or as safetensors) where you trust it, and load that") from None
        raise WeightsError(f"{path} is not a weights-only checkpoint (a plain pickle, or corrupt); refusing to "
                           f"unpickle it. If you downloaded it, delete {path} and download again") from None
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        raise WeightsError(f"{path} is corrupt or truncated ({str(exc).splitlines()[0][:120]}): delete {path} and "
                           "download again (the same call downloads it)") from None


def map_keys(name: str, state: dict) -> dict:
    """Official key names -> timm's, per source (RETFound: MAE decoder dropped; FLAIR: vision tower only)."""
    if name == "retfound-mae":
        state = state.get("model", state)
        return {k: v for k, v in state.items() if not k.startswith(("decoder", "mask_token"))}
    if name == "flair-resnet50":
        prefix = "vision_model.model."
        return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix) and not k[len(prefix):].startswith("fc.")}
    if name == "retfound-green":
        return dict(state.get("model", state)) if isinstance(state.get("model"), dict) else dict(state)
    return dict(state)


class Renormalize:
    """A forward pre-hook: the book's fundus-normalised input → the normalisation the weights were trained with.

    Every chapter's dataloaders normalise with ``views.FUNDUS_MEAN/STD``; RETFound expects ImageNet statistics,
    RETFound-Green 0.5/0.5 and FLAIR plain [0, 1] pixels (chapter 3 explains why it matters). The hook maps
    ``x`` back to pixels and on to the weights' statistics, so the encoder keeps its class and attributes.
    """

    def __init__(self, mean, std):
        src_m, src_s = torch.tensor(FUNDUS_MEAN), torch.tensor(FUNDUS_STD)
        dst_m, dst_s = torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)
        self.scale = (src_s / dst_s).view(1, 3, 1, 1)              # x_w = x · scale + shift
        self.shift = ((src_m - dst_m) / dst_s).view(1, 3, 1, 1)
        self.mean, self.std = tuple(float(v) for v in mean), tuple(float(v) for v in std)

    def __call__(self, module, args):
        x = args[0]
        return (x * self.scale.to(x.device, x.dtype) + self.shift.to(x.device, x.dtype),) + tuple(args[1:])

    def __repr__(self):
        return f"Renormalize(fundus -> mean={self.mean}, std={self.std})"


def expect_fundus_input(model: torch.nn.Module, w: WeightsInfo) -> torch.nn.Module:
    """Register :class:`Renormalize` on ``model`` for the statistics of ``w``; ``model.input_stats`` records them."""
    model.register_forward_pre_hook(Renormalize(w.mean, w.std))
    model.input_stats = {"mean": w.mean, "std": w.std}
    return model


def load_into(model: torch.nn.Module, state: dict, name: str = "") -> dict:
    """Load ``state`` into ``model`` non-strictly and report what did not match."""
    model_keys = set(model.state_dict())
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    bad_shape = [k for k, v in state.items() if k in shapes and tuple(v.shape) != tuple(shapes[k])]
    state = {k: v for k, v in state.items() if k not in bad_shape}
    result = model.load_state_dict(state, strict=False)
    report = {"missing": list(result.missing_keys), "unexpected": list(result.unexpected_keys),
              "shape_mismatch": bad_shape, "loaded": len(model_keys) - len(result.missing_keys)}
    print(f"[weights] {name}: {report['loaded']} tensors loaded, {len(report['missing'])} missing, "
          f"{len(report['unexpected'])} unexpected, {len(bad_shape)} shape mismatches")
    for kind in ("missing", "unexpected", "shape_mismatch"):
        if report[kind]:
            print(f"  {kind}: {report[kind][:8]}{' …' if len(report[kind]) > 8 else ''}")
    return report


def _hf_says(w: WeightsInfo, endpoint: str, cache, exc) -> DownloadError:
    """huggingface_hub's error, as the book's error that says what to do."""
    repo, file = w.path.rsplit("/", 1)
    if isinstance(exc, LocalEntryNotFoundError) and isinstance(exc.__cause__, HfHubHTTPError):
        exc = exc.__cause__  # the hub answered (403, 404, 5xx…) and the file is not cached either
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, GatedRepoError) or status in (401, 403):
        return GatedError(f"{endpoint}/{repo} answered {status}: " + gated_advice(w))
    if isinstance(exc, LocalEntryNotFoundError):
        where = cache or "Hugging Face's cache (HF_HUB_CACHE)"
        why = "HF_HUB_OFFLINE is set" if _hub_offline() else f"{endpoint} could not be reached"
        return OfflineError(f"{why} and {file} of {repo} is not in {where}. Connect (or unset HF_HUB_OFFLINE) and "
                            f"run the same call again, or download it on another machine (`hf download {repo} {file}`)"
                            " and copy the cache over")
    if isinstance(exc, HfHubHTTPError):
        return DownloadError(f"{endpoint} answered HTTP {status} for {file} of {repo}: check the name, and "
                             f"{HF_ENV} / HF_ENDPOINT if you use a mirror")
    return OfflineError(f"the transfer of {file} from {endpoint} broke off ({type(exc).__name__}: {exc}); run the "
                        "same call again")


def gated_advice(w: WeightsInfo) -> str:
    """What to do about gated weights ``w``: the terms, a token, and where a token goes (Colab's Secrets, HF_TOKEN)."""
    repo = w.path.rsplit("/", 1)[0]
    return (f"{w.name} is gated. Log in at huggingface.co, accept the terms on the model page "
            f"(https://huggingface.co/{repo}) and create a read token; then on Colab open the Secrets panel "
            "(the key icon in the left sidebar), add a secret named HF_TOKEN with the token and allow this "
            "notebook to read it; elsewhere set the environment variable HF_TOKEN, run `hf auth login`, or pass "
            "token=...")


def open_or_alternative(name: str, token: str | None = None, **kw):
    """``(encoder, used)``: the weights ``name``, or, when they are gated and no token opens them, their open
    ``alternative`` (RETFound -> RETFound-Green) with a message that says why and how to get the gated ones.

    Chapter 3 compares RETFound with RETFound-Green this way: a student without a token still gets a chapter that
    runs to its end, and the report names which weights it used.
    """
    w = info(name)
    try:
        return pretrained_encoder(name, token=token, **kw), name
    except GatedError as exc:
        if not w.alternative:
            raise
        print(f"[weights] {exc}\n[weights] going on with the open {w.alternative!r} instead of {name!r}")
        return pretrained_encoder(w.alternative, **kw), w.alternative


def _hub_offline() -> bool:
    return constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def hf_file(w: WeightsInfo, token: str | None = None, cache: Path | None = None, progress: bool = True) -> Path:
    """The local path of a Hugging Face weights file: from the cache if it is there (no token, no network), else
    downloaded with ``hf_hub_download`` (which sends the token to the hub only, never to the CDN it redirects to).

    ``cache``: a hub cache folder (``None``: Hugging Face's own). Token: ``token``, else ``HF_TOKEN`` or the
    ``hf auth login`` one. Endpoint: ``RETINA_HF_ENDPOINT``, else ``HF_ENDPOINT``, else huggingface.co.
    """
    repo, file = w.path.rsplit("/", 1)
    cached = try_to_load_from_cache(repo, file, cache_dir=cache)
    if isinstance(cached, str):
        return Path(cached)
    token = token or get_token()
    if w.gated and not token and not _hub_offline():
        raise GatedError("no Hugging Face token is set: " + gated_advice(w))
    endpoint = os.environ.get(HF_ENV) or None
    quiet = not progress and not are_progress_bars_disabled()
    if quiet:
        disable_progress_bars()
    try:
        return Path(hf_hub_download(repo, file, cache_dir=cache, endpoint=endpoint, token=token or None,
                                    local_files_only=_hub_offline()))
    except transfer_errors() as exc:  # the hub's errors are OSErrors; httpx's are added
        raise _hf_says(w, endpoint or constants.ENDPOINT, cache, exc) from None
    finally:
        if quiet:
            enable_progress_bars()


def weights_file(name: str, token: str | None = None, cache: Path | None = None, progress: bool = True) -> Path:
    """The local checkpoint of the hub or GitHub weights ``name`` (chapter 3's RETFound, chapter 5's FLAIR).

    A file put by hand at ``<cache>/<name>/<file>`` (``cache``: ``$RETINA_CACHE/weights``) is used as it is; a
    Hugging Face file comes from the hub cache or :func:`hf_file`; a GitHub release is fetched (unless it is there
    and verifies).
    """
    w = info(name)
    if w.host == "timm":
        raise WeightsError(f"{name} comes from timm: load it with pretrained_encoder({name!r})")
    manual = (Path(cache) if cache else cache_dir("weights")) / name / Path(w.path).name
    if w.host == "hf":
        return manual if manual.exists() else hf_file(w, token, Path(cache) / "hf" if cache else None, progress)
    return fetch(weights_url(w), manual, progress=progress)


def pretrained_encoder(name: str, token: str | None = None, cache: Path | None = None, arch: str | None = None,
                       progress: bool = True) -> torch.nn.Module:
    """A timm encoder (``num_classes=0``: it returns pooled features) with official weights loaded.

    It takes the book's fundus-normalised images: a forward pre-hook (:class:`Renormalize`) converts them to the
    statistics the weights were trained with (``WeightsInfo.mean/std``). ``arch`` overrides the timm architecture (the tests load small checkpoints in
    the official key layouts into small models).
    """

    w = info(name)
    shrink = architecture(arch or w.arch)  # {} but in the rehearsal profile
    if w.host == "timm":
        try:
            model = timm.create_model(w.path if arch is None else arch, pretrained=True, num_classes=0, **shrink)
        except transfer_errors() as exc:  # offline: the hub's LocalEntryNotFoundError is an OSError
            raise OfflineError(f"could not fetch {w.path} through timm ({type(exc).__name__}: {exc}). "
                               "Without internet, use the random initialisation (profile smoke or cpu).") from None
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        return expect_fundus_input(model, replace(w, mean=tuple(cfg.get("mean", w.mean)),
                                                  std=tuple(cfg.get("std", w.std))))
    dest = weights_file(name, token, cache, progress)
    kwargs = {"img_size": w.img_size, **w.timm_kwargs} if (arch or w.arch).startswith("vit") else dict(w.timm_kwargs)
    model = timm.create_model(arch or w.arch, pretrained=False, num_classes=0, **{**kwargs, **shrink})
    load_into(model, map_keys(name, read_checkpoint(dest)), name)
    if name == "retfound-green":
        model.global_pool = "avg"
    return expect_fundus_input(model, w)
