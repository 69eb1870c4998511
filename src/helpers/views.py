"""Views of fundus photographs: the augmentations that keep a diagnosis, on whole batches on the device.

Two users: supervised training (:func:`fundus_augmentations`, fastai batch
transforms, shown in chapter 0) and self-supervised pretraining
(:class:`FundusViews`, the random views SimCLR contrasts, explained in chapter 1
"SimCLR on fundus photographs"). :func:`decode` turns normalised views back
into pictures.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from fastai.vision.augment import Brightness, Contrast, Dihedral, Rotate
from torch import nn

FUNDUS_MEAN = (0.5, 0.3, 0.2)
FUNDUS_STD = (0.3, 0.2, 0.15)
# One normalisation per modality; a table names its own (``ImageTable.modality``) and every loader, predictor and
# plot reads the statistics from here. OCT B-scans are grey (stacked to 3 channels): a neutral grey standardisation,
# not statistics measured on a dataset.
STATS = {"fundus": (FUNDUS_MEAN, FUNDUS_STD), "oct": ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))}


def stats(modality: str = "fundus") -> tuple:
    """``(mean, std)`` per channel for ``modality`` (``"fundus"`` or ``"oct"``; chapter 0 explains the fundus ones)."""
    if modality not in STATS:
        raise ValueError(f"no normalisation for the modality {modality!r}; there is one for {', '.join(STATS)}")
    return STATS[modality]


def _stats_like(x: torch.Tensor, modality: str):
    mean, std = stats(modality)
    return (torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1),
            torch.tensor(std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1))


def normalize(x: torch.Tensor, modality: str = "fundus") -> torch.Tensor:
    """Float images in [0, 1] ``[B, 3, H, W]`` standardised with ``modality``'s statistics (as the dataloaders do)."""
    mean, std = _stats_like(x, modality)
    return (x - mean) / std


def denormalize(x: torch.Tensor, modality: str = "fundus") -> torch.Tensor:
    """The inverse of :func:`normalize`: standardised images back to [0, 1] (unclipped)."""
    mean, std = _stats_like(x, modality)
    return x * std + mean


def fundus_augmentations(size: int, strength: float = 1.0) -> list:
    """Batch augmentations that keep a fundus diagnosis: flips, rotations, mild brightness/contrast.

    No hue or saturation shifts (they change a lesion's colour: an exudate's
    yellow, a haemorrhage's red) and no strong crops (they can cut a lesion
    away). They run on whole batches on the device; shown with a figure in
    chapter 0.
    """
    return [
        Dihedral(p=0.5 * strength),
        Rotate(max_deg=20 * strength, p=0.75, pad_mode="zeros"),
        Brightness(max_lighting=0.15 * strength, p=0.75),
        Contrast(max_lighting=0.15 * strength, p=0.75),
    ]


class FundusViews(nn.Module):
    """Random views of a whole batch on its own device (inputs in [0, 1], outputs normalised).

    Geometry, per image, in one ``affine_grid``/``grid_sample``: a resized crop
    (area fraction in ``crop_scale``), a rotation up to ``max_rotate`` degrees,
    a horizontal flip. Then the **camera** changes a photograph can come with
    without changing its diagnosis — SynthRetina's sites differ in exactly
    these, and the defaults stay within their range: a per-channel gain (white
    balance, each channel times ``1 ± gain``), a gamma in ``[1/(1+gamma),
    1+gamma]``, brightness and contrast, a blur (probability ``blur_p``, σ up to
    ``blur_sigma`` px: more would erase microaneurysms) and sensor noise (σ up
    to ``noise``), all inside the field of view. Without
    them two views of one image can be matched by the camera's colour cast
    alone (chapter 1's colour-shortcut experiment). Only when ``hue`` > 0, a
    hue rotation — the augmentation that destroys a lesion's colour, kept for
    chapter 1's exercise.
    """

    def __init__(self, crop_scale=(0.6, 1.0), max_rotate: float = 30.0, flip: bool = True,
                 brightness: float = 0.2, contrast: float = 0.2, gain: float = 0.15, gamma: float = 0.1,
                 blur_p: float = 0.3, blur_sigma: float = 0.5, noise: float = 0.03, hue: float = 0.0):
        super().__init__()
        if not 0 < crop_scale[0] <= crop_scale[1] <= 1:
            raise ValueError(f"crop_scale must be (lo, hi) with 0 < lo <= hi <= 1, got {crop_scale}")
        self.crop_scale, self.max_rotate, self.flip = tuple(crop_scale), max_rotate, flip
        self.brightness, self.contrast, self.gain, self.gamma = brightness, contrast, gain, gamma
        self.blur_p, self.blur_sigma, self.noise, self.hue = blur_p, blur_sigma, noise, hue
        self.register_buffer("mean", torch.tensor(FUNDUS_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(FUNDUS_STD).view(1, 3, 1, 1), persistent=False)

    def extra_repr(self) -> str:
        return (f"crop_scale={self.crop_scale}, max_rotate={self.max_rotate}, flip={self.flip}, "
                f"brightness={self.brightness}, contrast={self.contrast}, gain={self.gain}, gamma={self.gamma}, "
                f"blur_p={self.blur_p}, blur_sigma={self.blur_sigma}, noise={self.noise}, hue={self.hue}")

    def forward(self, x: torch.Tensor, size: int | None = None) -> torch.Tensor:
        """Views of ``x`` at its own size, or sampled straight to ``size`` × ``size`` px (DINO's local crops)."""
        b, dev = x.shape[0], x.device
        u = lambda lo, hi, *shape: torch.empty(b, *shape, device=dev).uniform_(lo, hi)  # noqa: E731
        # geometry: crop, rotation, flip in one sampling grid
        s = u(*self.crop_scale).sqrt()
        ang = u(-1, 1) * math.radians(self.max_rotate)
        fx = torch.where(torch.rand(b, device=dev) < 0.5, -1.0, 1.0) if self.flip else torch.ones(b, device=dev)
        tx, ty = u(-1, 1) * (1 - s), u(-1, 1) * (1 - s)
        cos, sin = torch.cos(ang) * s, torch.sin(ang) * s
        theta = torch.stack([torch.stack([cos * fx, -sin, tx], 1), torch.stack([sin * fx, cos, ty], 1)], 1)
        out = list(x.shape) if size is None else [b, x.shape[1], int(size), int(size)]
        grid = F.affine_grid(theta, out, align_corners=False)
        v = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        fov = (v.amax(1, keepdim=True) > 0.02).float()  # the camera's changes stay inside the field of view
        # camera: white balance, gamma, brightness, contrast
        if self.gain > 0:
            v = v * u(1 - self.gain, 1 + self.gain, 3).view(b, 3, 1, 1)
        if self.gamma > 0:
            g = torch.exp(u(-1, 1) * math.log1p(self.gamma)).view(b, 1, 1, 1)
            v = v.clamp(0, 1) ** g
        v = v * u(1 - self.brightness, 1 + self.brightness).view(b, 1, 1, 1)
        m = v.mean((1, 2, 3), keepdim=True)
        v = (v - m) * u(1 - self.contrast, 1 + self.contrast).view(b, 1, 1, 1) + m
        if self.hue > 0:
            v = _rotate_hue(v, u(-self.hue, self.hue) * math.pi)
        if self.blur_p > 0 and self.blur_sigma > 0:
            pick = (torch.rand(b, device=dev) < self.blur_p).view(b, 1, 1, 1)
            v = torch.where(pick, _gaussian_blur(v, u(0.1, self.blur_sigma)), v)
        if self.noise > 0:
            v = v + torch.randn_like(v) * u(0, self.noise).view(b, 1, 1, 1)
        v = v.clamp(0, 1) * fov
        return (v - self.mean) / self.std


def multi_crop(x: torch.Tensor, n_global: int = 2, n_local: int = 4, global_scale=(0.5, 1.0),
               local_scale=(0.05, 0.25), local_size: int | None = None, views: FundusViews | None = None):
    """DINO's multi-crop (chapter 2): ``(global views, local views)``, two lists of normalised view batches.

    Global views cover ``global_scale`` of the image at its own size; local
    views cover ``local_scale`` — at 48 px, 5–25 % is a patch of 11–24 px, room
    for a lesion cluster but not a whole quadrant — resized to ``local_size``
    (default 3/8 of the image side). Both keep ``views``' camera changes.
    """
    base = views or FundusViews()
    g, l = copy.copy(base), copy.copy(base)
    g.crop_scale, l.crop_scale = tuple(global_scale), tuple(local_scale)
    size = local_size or max(8, round(x.shape[-1] * 3 / 8))
    glob = [g(x) for _ in range(n_global)]
    loc = [l(x, size=size) for _ in range(n_local)]  # sampled straight to the small size: cheap on a CPU
    return glob, loc


def _gaussian_blur(v: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each image with its own Gaussian σ (pixels), a separable 5-tap kernel."""
    b = v.shape[0]
    t = torch.arange(-2, 3, device=v.device, dtype=v.dtype)
    k = torch.exp(-(t[None] ** 2) / (2 * sigma[:, None] ** 2))
    k = k / k.sum(1, keepdim=True)  # [b, 5]
    c, h, w = v.shape[1:]
    x = v.reshape(1, b * c, h, w)
    kk = k.repeat_interleave(c, 0)
    x = F.conv2d(F.pad(x, (2, 2, 0, 0), mode="replicate"), kk.view(b * c, 1, 1, 5), groups=b * c)
    x = F.conv2d(F.pad(x, (0, 0, 2, 2), mode="replicate"), kk.view(b * c, 1, 5, 1), groups=b * c)
    return x.view(b, c, h, w)


def _rotate_hue(v: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotate each image's hue by ``angle`` radians (in YIQ space)."""
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], device=v.device)
    yiq = torch.einsum("ij,bjhw->bihw", to_yiq, v)
    c, s = torch.cos(angle).view(-1, 1, 1), torch.sin(angle).view(-1, 1, 1)
    i, q = yiq[:, 1] * c - yiq[:, 2] * s, yiq[:, 1] * s + yiq[:, 2] * c
    yiq = torch.stack([yiq[:, 0], i, q], 1)
    return torch.einsum("ij,bjhw->bihw", torch.linalg.inv(to_yiq), yiq)


def decode(v: torch.Tensor, modality: str = "fundus"):
    """Normalised views ``[B, 3, H, W]`` back to pictures ``[B, H, W, 3]`` in [0, 1] (NumPy, for plotting)."""
    return denormalize(v.detach(), modality).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
