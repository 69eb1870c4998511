"""SimCLR as fastai pieces: views on the device, projection head, NT-Xent, a Learner, load-or-train.

Explained in chapter 1 ("SimCLR on fundus photographs"), which writes NT-Xent
out in full; this module holds the library version the Learner and the
benchmark use (tested against lightly's ``NTXentLoss``).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from fastai.callback.core import Callback
from torch import nn

from .data import FUNDUS_MEAN, FUNDUS_STD
from .env import cache_dir


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """NT-Xent: each view's positive is its partner; the other 2N-2 views of the batch are negatives."""
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    sim = z @ z.t() / temperature
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(self_mask, float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, targets)


class ProjectionHead(nn.Sequential):
    """g(h): Linear -> BatchNorm -> ReLU -> Linear, the head SimCLR trains and then throws away."""

    def __init__(self, in_dim: int, hidden_dim: int = 512, out_dim: int = 128):
        super().__init__(nn.Linear(in_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True),
                         nn.Linear(hidden_dim, out_dim))


class SimCLRModel(nn.Module):
    """Encoder f followed by projection head g; ``encoder`` is any timm model with ``num_classes=0``."""

    def __init__(self, encoder: nn.Module, feat_dim: int, proj_dim: int = 128, hidden_dim: int = 512):
        super().__init__()
        self.encoder, self.head = encoder, ProjectionHead(feat_dim, hidden_dim, proj_dim)

    def forward(self, x):
        return self.head(self.encoder(x))


class FundusViews(nn.Module):
    """Random views of a whole batch on its own device (inputs in [0, 1], outputs normalised).

    Geometry per image in one ``affine_grid``/``grid_sample``: a resized crop
    (area fraction in ``crop_scale``), a rotation up to ``max_rotate`` degrees, a
    horizontal flip; then brightness and contrast changes, an optional blur and,
    only when ``hue`` > 0, a hue rotation — the augmentation that destroys a
    lesion's colour, kept for chapter 1's exercise.
    """

    def __init__(self, crop_scale=(0.6, 1.0), max_rotate: float = 30.0, flip: bool = True,
                 brightness: float = 0.2, contrast: float = 0.2, blur_p: float = 0.3, hue: float = 0.0):
        super().__init__()
        self.crop_scale, self.max_rotate, self.flip = crop_scale, max_rotate, flip
        self.brightness, self.contrast, self.blur_p, self.hue = brightness, contrast, blur_p, hue
        self.register_buffer("mean", torch.tensor(FUNDUS_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(FUNDUS_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, dev = x.shape[0], x.device
        u = lambda lo, hi: torch.empty(b, device=dev).uniform_(lo, hi)  # noqa: E731
        s = u(*self.crop_scale).sqrt()
        ang = u(-1, 1) * math.radians(self.max_rotate)
        fx = torch.where(torch.rand(b, device=dev) < 0.5, -1.0, 1.0) if self.flip else torch.ones(b, device=dev)
        tx, ty = u(-1, 1) * (1 - s), u(-1, 1) * (1 - s)
        cos, sin = torch.cos(ang) * s, torch.sin(ang) * s
        theta = torch.stack([torch.stack([cos * fx, -sin, tx], 1), torch.stack([sin * fx, cos, ty], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        v = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        v = v * u(1 - self.brightness, 1 + self.brightness).view(b, 1, 1, 1)
        m = v.mean((1, 2, 3), keepdim=True)
        v = (v - m) * u(1 - self.contrast, 1 + self.contrast).view(b, 1, 1, 1) + m
        if self.hue > 0:
            v = _rotate_hue(v, u(-self.hue, self.hue) * math.pi)
        if self.blur_p > 0:
            k = torch.tensor([1.0, 2.0, 1.0], device=dev)
            k = (k[:, None] * k[None, :] / 16).expand(3, 1, 3, 3)
            blurred = F.conv2d(v, k, padding=1, groups=3)
            pick = (torch.rand(b, device=dev) < self.blur_p).view(b, 1, 1, 1)
            v = torch.where(pick, blurred, v)
        return (v.clamp(0, 1) - self.mean) / self.std


def _rotate_hue(v: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotate each image's hue by ``angle`` radians (in YIQ space)."""
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], device=v.device)
    yiq = torch.einsum("ij,bjhw->bihw", to_yiq, v)
    c, s = torch.cos(angle).view(-1, 1, 1), torch.sin(angle).view(-1, 1, 1)
    i, q = yiq[:, 1] * c - yiq[:, 2] * s, yiq[:, 1] * s + yiq[:, 2] * c
    yiq = torch.stack([yiq[:, 0], i, q], 1)
    return torch.einsum("ij,bjhw->bihw", torch.linalg.inv(to_yiq), yiq)


class SimCLRViews(Callback):
    """fastai Callback: ``before_batch`` replaces the batch by two views of it, concatenated."""
    order = 1

    def __init__(self, views: nn.Module):
        super().__init__()
        self.views = views

    def before_batch(self):
        x = self.learn.xb[0]
        self.views.to(x.device)
        with torch.no_grad():
            self.learn.xb = (torch.cat([self.views(x), self.views(x)]),)


class NTXent(nn.Module):
    """The loss a fastai Learner calls as ``loss_func(pred, *yb)``: NT-Xent of the two halves of ``pred``."""

    def __init__(self, temperature: float = 0.5, fn=None):
        super().__init__()
        self.temperature, self.fn = temperature, fn or nt_xent_loss

    def forward(self, z, *_):
        n = z.shape[0] // 2
        return self.fn(z[:n], z[n:], self.temperature)


def simclr_learner(dls, encoder: nn.Module, feat_dim: int, proj_dim: int = 128, temperature: float = 0.5,
                   views: nn.Module | None = None, loss_fn=None, wd: float = 1e-4):
    """A fastai Learner for SimCLR pretraining (mixed precision when the device is CUDA).

    ``dls`` must yield images in [0, 1] (``dataloaders(..., augment=False, normalize=False)``).
    """
    from fastai.learner import Learner
    import fastai.callback.all  # noqa: F401  (fit_one_cycle, to_fp16)
    model = SimCLRModel(encoder, feat_dim, proj_dim)
    learn = Learner(dls, model, loss_func=NTXent(temperature, loss_fn), cbs=[SimCLRViews(views or FundusViews())],
                    wd=wd)
    if dls.device is not None and torch.device(dls.device).type == "cuda":
        learn = learn.to_fp16()
    return learn


def run_key(**parts) -> str:
    """A short hash of everything that produced a run (keys checkpoints and features)."""
    import hashlib
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_or_train(learn, key: str, epochs: int, lr: float, folder: Path | None = None, name: str = "simclr") -> dict:
    """Train with ``fit_one_cycle`` and save (safetensors + loss history), or load a run saved under ``key``.

    Returns the loss history ``{"train": [...per batch], "valid": [...per epoch], "loaded": bool}``.
    """
    from safetensors.torch import load_file, save_file
    folder = Path(folder) if folder else cache_dir("checkpoints")
    weights, hist_path = folder / f"{name}-{key}.safetensors", folder / f"{name}-{key}.json"
    if weights.exists() and hist_path.exists():
        learn.model.load_state_dict(load_file(str(weights)))
        hist = json.loads(hist_path.read_text())
        print(f"loaded the saved run {weights.name} (delete it to train again)")
        return {**hist, "loaded": True}
    learn.fit_one_cycle(epochs, lr)
    hist = {"train": [float(x) for x in learn.recorder.losses],
            "valid": [float(v[0]) for v in learn.recorder.values if v]}
    state = {k: v.detach().cpu().contiguous() for k, v in learn.model.state_dict().items()}
    tmp = weights.with_suffix(".tmp")
    save_file(state, str(tmp))
    tmp.replace(weights)
    hist_path.write_text(json.dumps(hist))
    return {**hist, "loaded": False}
