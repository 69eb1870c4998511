"""Latent diffusion as fastai pieces: a KL autoencoder, a noise schedule, the ε-prediction loss, DDPM and DDIM
sampling with classifier-free guidance.

For chapter 4 ("Latent diffusion as in DERETFound"), which writes the forward noising, the sampling step and the
guided ε out; this module holds the library versions, checked in the tests against diffusers' ``DDPMScheduler``
and ``DDIMScheduler`` (``add_noise`` and ``step``). The networks are diffusers' own (``AutoencoderKL``,
``UNet2DModel`` with a class embedding), so the ``full`` profile can load a released generator through the same
library. Same shape as :mod:`helpers.methods.simclr`: a plain loss, a Callback that draws t and the noise in
``before_batch``, ``diffusion_learner(dls, unet, **knobs)``; the EMA of the denoiser is :class:`helpers.runs.EMA`.

Conventions (as Stable Diffusion): images in [-1, 1]; latents multiplied by ``latent_scale`` = 1 / std of the
training latents, so the denoiser sees roughly unit variance; class ``n_classes`` is the "no label" class of
classifier-free guidance.
"""
from __future__ import annotations

import copy
import math
import os
from pathlib import Path

import diffusers  # its networks load on first use (chapter 4 alone builds them)
import fastai.callback.all  # noqa: F401
import numpy as np
import torch
import torch.nn.functional as F
from fastai.callback.core import Callback
from fastai.learner import Learner
from torch import nn
from tqdm.auto import tqdm

from ..env import cache_dir
from ..runs import EMA, mixed_precision
from ..weights import WeightsError

# --- the noise schedule and the forward process -------------------------------------------------------------------

def betas(T: int = 1000, schedule: str = "cosine") -> torch.Tensor:
    """β_1…β_T: ``"linear"`` (1e-4 → 0.02, DDPM) or ``"cosine"`` (Nichol & Dhariwal, capped at 0.999 — diffusers'
    ``squaredcos_cap_v2``)."""
    if schedule == "linear":
        return torch.linspace(1e-4, 0.02, T, dtype=torch.float32)
    if schedule == "cosine":
        abar = lambda s: math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
        return torch.tensor([min(1 - abar((i + 1) / T) / abar(i / T), 0.999) for i in range(T)], dtype=torch.float32)
    raise ValueError(f"unknown schedule {schedule!r}; schedules: linear, cosine")


def alphas_cumprod(T: int = 1000, schedule: str = "cosine") -> torch.Tensor:
    """ᾱ_t = ∏_{s≤t} (1 − β_s), the share of the signal's variance left at step t."""
    return torch.cumprod(1 - betas(T, schedule), 0)


def _at(abar: torch.Tensor, t, like: torch.Tensor) -> torch.Tensor:
    """ᾱ at the timesteps ``t`` (an int or one per sample), shaped to broadcast over ``like``."""
    a = abar.to(like.device)[torch.as_tensor(t, device=like.device).long()]
    return a.view(-1, *([1] * (like.ndim - 1))).to(like.dtype) if a.ndim else a.to(like.dtype)


def add_noise(x0: torch.Tensor, noise: torch.Tensor, t, abar: torch.Tensor) -> torch.Tensor:
    """q(x_t | x_0): ``√ᾱ_t · x0 + √(1 − ᾱ_t) · noise``."""
    a = _at(abar, t, x0)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def diffusion_loss(pred_noise: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The ε-prediction loss of DDPM: the mean squared error between the predicted and the true noise."""
    return F.mse_loss(pred_noise.float(), noise.float())


# --- sampling -----------------------------------------------------------------------------------------------------

def timesteps(T: int, steps: int) -> list:
    """The timesteps a sampler visits, from noisy to clean: every ``T // steps``-th, as diffusers' "leading"
    spacing (``[900, 800, …, 0]`` for T = 1000, 10 steps)."""
    if not 1 <= steps <= T:
        raise ValueError(f"steps must be in 1…{T}, got {steps}")
    return list(range(0, T, T // steps))[:steps][::-1]


def predicted_x0(eps: torch.Tensor, t: int, x: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
    """The clean sample the noise prediction implies: ``(x_t − √(1 − ᾱ_t) ε̂) / √ᾱ_t``."""
    a = _at(abar, t, x)
    return (x - (1 - a).sqrt() * eps) / a.sqrt()


def ddpm_step(eps: torch.Tensor, t: int, prev_t: int, x: torch.Tensor, abar: torch.Tensor, generator=None):
    """One ancestral DDPM step x_t → x_prev (``prev_t`` = −1 after the last): the posterior mean of q(x_prev | x_t,
    x̂0) plus noise of variance (1 − ᾱ_prev)/(1 − ᾱ_t) · (1 − ᾱ_t/ᾱ_prev) — none at t = 0 (diffusers' "fixed_small").
    """
    a_t = _at(abar, t, x)
    a_prev = _at(abar, prev_t, x) if prev_t >= 0 else torch.ones_like(a_t)
    beta = 1 - a_t / a_prev                                    # the step's effective β when steps are skipped
    x0 = predicted_x0(eps, t, x, abar)
    mean = (a_prev.sqrt() * beta / (1 - a_t)) * x0 + ((1 - beta).sqrt() * (1 - a_prev) / (1 - a_t)) * x
    if t == 0:
        return mean
    var = ((1 - a_prev) / (1 - a_t) * beta).clamp_min(1e-20)
    z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device="cpu" if generator is None
                    else generator.device).to(x.device)
    return mean + var.sqrt() * z


def ddim_step(eps: torch.Tensor, t: int, prev_t: int, x: torch.Tensor, abar: torch.Tensor):
    """One deterministic DDIM step (η = 0): ``√ᾱ_prev · x̂0 + √(1 − ᾱ_prev) · ε̂`` (ᾱ_prev = 1 after the last)."""
    a_prev = _at(abar, prev_t, x) if prev_t >= 0 else torch.ones((), dtype=x.dtype, device=x.device)
    return a_prev.sqrt() * predicted_x0(eps, t, x, abar) + (1 - a_prev).sqrt() * eps


def guided(eps_cond: torch.Tensor, eps_uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: ``ε_u + s · (ε_c − ε_u)`` — s = 0 the unconditional model, s = 1 the conditional
    one, s > 1 pushes further from the unconditional prediction."""
    return eps_uncond + scale * (eps_cond - eps_uncond)


@torch.no_grad()
def sample(model: nn.Module, labels: torch.Tensor, abar: torch.Tensor, shape, steps: int = 50, method: str = "ddim",
           guidance: float = 1.0, generator=None, trajectory: bool = False, progress: bool = False):
    """Latents for ``labels`` (class ids) by DDPM or DDIM over ``steps`` of the T = ``len(abar)`` timesteps.

    ``model(x, t, y)`` predicts the noise (:class:`Denoiser`, its ``null`` class for the unconditional pass).
    With ``guidance`` ≠ 1 each step runs the conditional and the unconditional pass in one batch. Returns the
    latents, and with ``trajectory`` the list of x̂0 predicted along the way (for the denoising figure).
    """
    device = next(model.parameters()).device
    labels = labels.to(device)
    g_device = generator.device if generator is not None else "cpu"
    x = torch.randn((len(labels), *shape), generator=generator, device=g_device).to(device)
    null = torch.full_like(labels, model.null)
    ts = timesteps(len(abar), steps)
    seen = []
    for i, t in enumerate(tqdm(ts, desc=f"{method} sampling", leave=False, disable=not progress)):
        prev = ts[i + 1] if i + 1 < len(ts) else -1
        tt = torch.full((len(labels),), t, device=device, dtype=torch.long)
        if guidance == 1.0:
            eps = model(x, tt, labels)
        elif guidance == 0.0:
            eps = model(x, tt, null)
        else:
            e = model(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([labels, null]))
            eps = guided(*e.chunk(2), guidance)
        if trajectory:
            seen.append(predicted_x0(eps, t, x, abar).cpu())
        x = ddim_step(eps, t, prev, x, abar) if method == "ddim" else ddpm_step(eps, t, prev, x, abar, generator)
    return (x, seen) if trajectory else x


# --- the denoiser and its Learner ---------------------------------------------------------------------------------

class Denoiser(nn.Module):
    """A class-conditional ``UNet2DModel`` predicting the noise, with an EMA copy that samples.

    ``forward(x_t, t, y)`` → ε̂ from the trained weights; ``sampler()`` is the EMA copy (used by :func:`sample`).
    Class ``n_classes`` (``self.null``) is the "no label" of classifier-free guidance.
    """

    def __init__(self, unet: nn.Module, n_classes: int):
        super().__init__()
        self.unet, self.null = unet, int(n_classes)
        self.ema = copy.deepcopy(unet).requires_grad_(False)

    def forward(self, x, t, y):
        return self.unet(x, t, class_labels=y).sample

    def sampler(self) -> nn.Module:
        return _EMADenoiser(self)


class _EMADenoiser(nn.Module):
    def __init__(self, d: Denoiser):
        super().__init__()
        self.ema, self.null = d.ema, d.null

    def forward(self, x, t, y):
        return self.ema(x, t, class_labels=y).sample


def unet(sample_size: int, in_channels: int, n_classes: int, channels=(32, 64, 64), layers_per_block: int = 1,
         norm_groups: int = 16) -> nn.Module:
    """diffusers' ``UNet2DModel`` sized for a CPU: one down/up level per entry of ``channels`` (attention only in the
    middle block), a class embedding added to the time embedding (``n_classes`` + 1 rows: the last is "no label")."""
    n = len(channels)
    return diffusers.UNet2DModel(sample_size=sample_size, in_channels=in_channels, out_channels=in_channels,
                       block_out_channels=tuple(channels), layers_per_block=layers_per_block,
                       down_block_types=("DownBlock2D",) * n, up_block_types=("UpBlock2D",) * n,
                       norm_num_groups=norm_groups, attention_head_dim=channels[-1] // 2,
                       num_class_embeds=n_classes + 1)


class DiffusionNoise(Callback):
    """``before_batch``: draw a timestep and Gaussian noise per latent, noise the batch (:func:`add_noise`), drop
    the label to the null class with probability ``p_uncond``; the target becomes the noise."""
    order = 1

    def __init__(self, abar: torch.Tensor, p_uncond: float = 0.1, null: int = 0):
        super().__init__()
        self.abar, self.p_uncond, self.null = abar, float(p_uncond), int(null)

    def before_batch(self):
        z0, y = self.learn.xb[0], self.learn.yb[0].long().view(-1)
        t = torch.randint(0, len(self.abar), (len(z0),), device=z0.device)
        noise = torch.randn_like(z0)
        drop = torch.rand(len(y), device=y.device) < self.p_uncond
        self.learn.xb = (add_noise(z0, noise, t, self.abar), t, torch.where(drop, torch.full_like(y, self.null), y))
        self.learn.yb = (noise,)


def diffusion_learner(dls, unet: nn.Module, n_classes: int, T: int = 1000, schedule: str = "cosine",
                      p_uncond: float = 0.1, ema: float = 0.995, wd: float = 0.0, loss_fn=None, cbs=None):
    """A fastai Learner for a class-conditional latent denoiser.

    ``dls`` yields ``(latents, class id)``; ``loss_fn(pred_noise, noise)`` replaces :func:`diffusion_loss`. The
    EMA of the UNet (momentum ``ema``) is kept by :class:`helpers.runs.EMA` after every step.
    """
    model = Denoiser(unet, n_classes)
    abar = alphas_cumprod(T, schedule)
    cbs = [DiffusionNoise(abar, p_uncond, n_classes), EMA(lambda m: m.unet, lambda m: m.ema, ema, ema)] + list(cbs or [])
    learn = Learner(dls, model, loss_func=loss_fn or diffusion_loss, cbs=cbs, wd=wd)
    learn.abar = abar
    learn = mixed_precision(learn)  # bf16 on recent GPUs, fp16 on older ones, none on a CPU
    return learn


# --- the KL autoencoder -------------------------------------------------------------------------------------------

def autoencoder(channels=(16, 32), latent_channels: int = 4, layers_per_block: int = 1, norm_groups: int = 16,
                attention: bool = False, initial_logvar: float = -6.0):
    """diffusers' ``AutoencoderKL`` sized for a CPU: it halves the image ``len(channels) − 1`` times (a 32-px fundus
    becomes ``latent_channels`` × 16 × 16 with two levels). Stable Diffusion's autoencoder has self-attention in
    its middle block; at 16 × 16 latents that attention costs more than the convolutions, so it is off unless
    ``attention``."""
    n = len(channels)
    vae = diffusers.AutoencoderKL(block_out_channels=tuple(channels), latent_channels=latent_channels,
                        layers_per_block=layers_per_block, norm_num_groups=norm_groups,
                        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
                        mid_block_add_attention=attention)
    with torch.no_grad():  # start with a narrow posterior (σ ≈ 0.05): a short training run learns detail sooner
        vae.quant_conv.bias[latent_channels:] = initial_logvar
    return vae


class KLAutoencoder(nn.Module):
    """``forward(x)`` → ``(reconstruction, mean, logvar)`` for images in [-1, 1], decoding a sampled latent."""

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, x):
        post = self.vae.encode(x).latent_dist
        return self.vae.decode(post.sample()).sample, post.mean, post.logvar

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The latent means of images in [-1, 1] (unscaled)."""
        return self.vae.encode(x).latent_dist.mean

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] from unscaled latents."""
        return self.vae.decode(z).sample


def vae_loss(pred, target, kl_weight: float = 1e-4) -> torch.Tensor:
    """Reconstruction MSE plus ``kl_weight`` × the KL divergence of q(z|x) from N(0, I), per latent element."""
    recon, mean, logvar = pred
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).mean()
    return F.mse_loss(recon.float(), target.float()) + kl_weight * kl


class Symmetric(Callback):
    """``before_batch``: images in [0, 1] become [-1, 1], and the target is the input itself (an autoencoder)."""
    order = 1

    def before_batch(self):
        x = self.learn.xb[0] * 2 - 1
        self.learn.xb, self.learn.yb = (x,), (x,)


def vae_learner(dls, vae: nn.Module, kl_weight: float = 1e-4, wd: float = 0.0, cbs=None):
    """A fastai Learner for the KL autoencoder (``dls`` yields images in [0, 1]: ``augment=False, normalize=False``)."""
    learn = Learner(dls, KLAutoencoder(vae), loss_func=lambda pred, y: vae_loss(pred, y, kl_weight),
                    cbs=[Symmetric()] + list(cbs or []), wd=wd)
    learn = mixed_precision(learn)  # bf16 on recent GPUs, fp16 on older ones, none on a CPU
    return learn


@torch.no_grad()
def latent_scale(latents: torch.Tensor) -> float:
    """Stable Diffusion's scale factor for our own autoencoder: 1 / the standard deviation of the latents."""
    return float(1 / latents.float().std())


@torch.no_grad()
def encode_images(ae: KLAutoencoder, images, bs: int = 256, device=None) -> torch.Tensor:
    """Unscaled latent means of uint8 images ``[N, H, W, 3]`` (or a float tensor in [0, 1], ``[N, 3, H, W]``)."""
    device = device or next(ae.parameters()).device
    x = images if torch.is_tensor(images) else torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    ae = ae.to(device).eval()
    return torch.cat([ae.encode((x[i:i + bs].to(device) * 2 - 1)).cpu() for i in range(0, len(x), bs)])


@torch.no_grad()
def decode_latents(ae: KLAutoencoder, z: torch.Tensor, bs: int = 256) -> torch.Tensor:
    """Images in [0, 1] ``[N, 3, H, W]`` from unscaled latents."""
    device = next(ae.parameters()).device
    ae = ae.eval()
    return torch.cat([((ae.decode(z[i:i + bs].to(device)) + 1) / 2).clamp(0, 1).cpu() for i in range(0, len(z), bs)])


def split_images(table, split: str, size: int) -> torch.Tensor:
    """One split of ``table`` as a float tensor in [0, 1], ``[N, 3, size, size]`` (chapter 4 keeps them in memory:
    the autoencoder encodes them, the grader and the Fréchet distance read them)."""
    idx = table.split_index(split)
    return torch.from_numpy(np.stack([table.image(int(i), size) for i in idx])).permute(0, 3, 1, 2).float() / 255


# --- a released generator (full profile) --------------------------------------------------------------------------

RELEASED = {
    "deretfound": {
        "env": "RETINA_DERETFOUND",
        "source": "Zenodo record 10253561 (ReSDv1.4: Stable Diffusion 1.4 whose UNet DERETFound fine-tuned for 60,000 "
                  "iterations on 150,000 retinal image-text pairs; the autoencoder and text encoder are "
                  "CompVis/stable-diffusion-v1-4's)",
        "licence": "Stable Diffusion 1.4 is released under the CreativeML OpenRAIL-M licence; the DERETFound "
                   "repository states no licence for its weights — read both before any use",
        "prompts": {"glaucoma": ("Normal fundus", "Referable glaucoma"),
                    "dr_grade": ("No Diabetic Retinopathy", "Mild Non-Proliferative Diabetic Retinopathy",
                                 "Moderate Non-Proliferative Diabetic Retinopathy",
                                 "Severe Non-Proliferative Diabetic Retinopathy", "Proliferative Diabetic Retinopathy")},
    },
}


def released_generator(name: str, path=None):
    """A released text-to-image fundus generator as a diffusers ``StableDiffusionPipeline`` (chapter 4, ``full``).

    Read from a local diffusers pipeline folder (``path``, else ``$RETINA_DERETFOUND``, else
    ``$RETINA_CACHE/weights/<name>``) in safetensors only — a downloaded pickle is never loaded. Nothing is
    downloaded here: a missing folder raises a :class:`helpers.weights.WeightsError` that says where the weights
    come from and under which licence.
    """
    if name not in RELEASED:
        raise WeightsError(f"unknown generator {name!r}; generators: {', '.join(RELEASED)}")
    info = RELEASED[name]
    folder = Path(path or os.environ.get(info["env"]) or cache_dir("weights") / name)
    if not (folder / "model_index.json").exists():
        raise WeightsError(f"no diffusers pipeline folder (model_index.json) at {folder}. The weights: "
                           f"{info['source']}. Save the pipeline there with save_pretrained(..., "
                           f"safe_serialization=True), or point ${info['env']} to it. Licence: {info['licence']}.")
    return diffusers.StableDiffusionPipeline.from_pretrained(str(folder), use_safetensors=True, safety_checker=None,
                                                   requires_safety_checker=False)
