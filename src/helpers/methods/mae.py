"""MAE as fastai pieces: patches, random masking, a light decoder, the masked loss, the Learner.

For chapter 3 ("MAE and RETFound"), which writes ``random_masking`` out; this
module holds the library version, with the semantics of the MAE authors' code:
per-sample uniform noise, an argsort shuffle, ``len_keep = int(L · (1 − ratio))``,
``ids_restore`` to undo the shuffle, mask 1 = removed, the positional embedding
added *before* masking and the CLS token appended after. The encoder is any
timm ``VisionTransformer`` (its own patch embedding, blocks and norm); the
decoder is built from timm ``Block``s. Same shape as :mod:`helpers.methods.simclr`:
a plain loss a student can replace, a Callback, ``mae_learner(dls, encoder, **knobs)``.
"""
from __future__ import annotations

import fastai.callback.all  # noqa: F401
import torch
from fastai.callback.core import Callback
from fastai.learner import Learner
from timm.models.vision_transformer import Block
from torch import nn

from ..runs import mixed_precision
from ..views import FundusViews


def patchify(imgs: torch.Tensor, p: int) -> torch.Tensor:
    """``[B, C, H, W]`` → ``[B, L, p·p·C]``: patches in row-major order, each flattened as (row, column, channel)."""
    b, c, h, w = imgs.shape
    if h % p or w % p:
        raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {p}")
    x = imgs.reshape(b, c, h // p, p, w // p, p)
    return torch.einsum("nchpwq->nhwpqc", x).reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(x: torch.Tensor, p: int, channels: int = 3) -> torch.Tensor:
    """The inverse of :func:`patchify` for a square grid: ``[B, L, p·p·C]`` → ``[B, C, H, W]``."""
    b, n, _ = x.shape
    g = int(round(n ** 0.5))
    if g * g != n:
        raise ValueError(f"{n} patches do not form a square grid")
    x = x.reshape(b, g, g, p, p, channels)
    return torch.einsum("nhwpqc->nchpwq", x).reshape(b, channels, g * p, g * p)


def random_masking(x: torch.Tensor, mask_ratio: float, generator: torch.Generator | None = None):
    """Keep a random ``1 − mask_ratio`` of the tokens of each sample.

    ``x``: ``[B, L, D]``. Returns ``(x_kept [B, len_keep, D], mask [B, L] with
    1 = removed, ids_restore [B, L])``; ``ids_restore`` puts the shuffled
    sequence back in order (``gather(cat(kept, removed), ids_restore)``).
    """
    if not 0 <= mask_ratio < 1:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    b, n, d = x.shape
    len_keep = int(n * (1 - mask_ratio))
    noise = torch.rand(b, n, device=x.device, generator=generator)
    ids_shuffle = torch.argsort(noise, dim=1)           # ascending: the smallest noise is kept
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :len_keep]
    kept = torch.gather(x, 1, ids_keep[..., None].expand(-1, -1, d))
    mask = torch.ones(b, n, device=x.device)
    mask[:, :len_keep] = 0
    return kept, torch.gather(mask, 1, ids_restore), ids_restore


def mae_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, norm_pix_loss: bool = False):
    """Mean squared error per patch, averaged over the *removed* patches only.

    With ``norm_pix_loss`` each target patch is standardised by its own mean
    and variance first (the MAE paper's better-representation option; its
    reconstructions then need the true patch statistics to be shown).
    """
    if norm_pix_loss:
        mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
        target = (target - mean) / (var + 1e-6) ** 0.5
    per_patch = ((pred - target) ** 2).mean(-1)
    return (per_patch * mask).sum() / mask.sum().clamp_min(1)


class MAEModel(nn.Module):
    """A timm ViT encoder that sees the visible patches only, and a light decoder that fills in the rest."""

    def __init__(self, encoder: nn.Module, mask_ratio: float = 0.75, decoder_dim: int = 64, decoder_depth: int = 2,
                 decoder_heads: int = 2):
        super().__init__()
        self.encoder, self.mask_ratio = encoder, mask_ratio
        self.patch = int(encoder.patch_embed.patch_size[0])
        n, dim = encoder.patch_embed.num_patches, encoder.embed_dim
        self.decoder_embed = nn.Linear(dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_pos = nn.Parameter(torch.zeros(1, n + 1, decoder_dim))  # learned (the paper: fixed sin-cos)
        self.decoder = nn.Sequential(*[Block(decoder_dim, decoder_heads, mlp_ratio=4.0) for _ in range(decoder_depth)])
        self.decoder_norm = nn.LayerNorm(decoder_dim)
        self.decoder_pred = nn.Linear(decoder_dim, self.patch ** 2 * 3)
        for t in (self.mask_token, self.decoder_pos):
            nn.init.trunc_normal_(t, std=0.02)

    def forward_encoder(self, imgs: torch.Tensor, mask_ratio: float, generator=None):
        enc = self.encoder
        x = enc.patch_embed(imgs)
        if x.ndim == 4:  # timm with dynamic_img_size keeps the grid (NHWC)
            x = x.flatten(1, 2)
        prefix = getattr(enc, "num_prefix_tokens", 1)
        x = x + enc.pos_embed[:, prefix:]                           # position first ...
        x, mask, ids_restore = random_masking(x, mask_ratio, generator)  # ... then drop tokens
        cls = (enc.cls_token + enc.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        x = enc.norm_pre(torch.cat([cls, x], 1))
        return enc.norm(enc.blocks(x)), mask, ids_restore

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        x = self.decoder_embed(latent)
        b, n = ids_restore.shape
        tokens = torch.cat([x[:, 1:], self.mask_token.expand(b, n + 1 - x.shape[1], -1)], 1)
        tokens = torch.gather(tokens, 1, ids_restore[..., None].expand(-1, -1, x.shape[2]))  # un-shuffle
        x = torch.cat([x[:, :1], tokens], 1) + self.decoder_pos
        return self.decoder_pred(self.decoder_norm(self.decoder(x)))[:, 1:]

    def forward(self, imgs: torch.Tensor):
        """``(predicted patches, mask, target patches)`` for a batch of (normalised) images."""
        latent, mask, ids_restore = self.forward_encoder(imgs, self.mask_ratio)
        return self.forward_decoder(latent, ids_restore), mask, patchify(imgs, self.patch)


class MAEViews(Callback):
    """``before_batch``: the batch becomes one view per image (MAE's resized crop and flip, on the device)."""
    order = 1

    def __init__(self, views=None):
        super().__init__()
        self.views = views or FundusViews(crop_scale=(0.5, 1.0), max_rotate=0, brightness=0, contrast=0, gain=0,
                                          gamma=0, blur_p=0, noise=0)

    def before_batch(self):
        with torch.no_grad():
            self.learn.xb = (self.views(self.learn.xb[0]),)


def mae_learner(dls, encoder: nn.Module, mask_ratio: float = 0.75, decoder_dim: int = 64, decoder_depth: int = 2,
                decoder_heads: int = 2, norm_pix_loss: bool = False, loss_fn=None, views=None, wd: float = 0.05,
                cbs=None):
    """A fastai Learner for MAE pretraining of a timm ViT ``encoder``.

    ``dls`` must yield images in [0, 1] (``dataloaders(..., augment=False,
    normalize=False)``); ``loss_fn(pred, target, mask, norm_pix_loss)``
    replaces the library's :func:`mae_loss`.
    """
    model = MAEModel(encoder, mask_ratio, decoder_dim, decoder_depth, decoder_heads)
    fn = loss_fn or mae_loss
    learn = Learner(dls, model, loss_func=lambda pred, *y: fn(pred[0], pred[2], pred[1], norm_pix_loss),
                    cbs=[MAEViews(views)] + list(cbs or []), wd=wd)
    learn = mixed_precision(learn)  # bf16 on recent GPUs, fp16 on older ones, none on a CPU
    return learn
