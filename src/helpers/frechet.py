"""The Fréchet distance in a book encoder's feature space, and a bootstrap of the difference of two (chapter 4,
"Latent diffusion, as in DERETFound": how close generated fundus images are to real ones).

The formula of FID (torchmetrics' ``FrechetInceptionDistance``), with the book's own encoder as the feature
extractor instead of Inception: values are comparable within the book, not with published FIDs.
"""
from __future__ import annotations

import numpy as np
import torch

from .views import normalize


def frechet_distance(encoder: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor, size: int | None = None,
                     bs: int = 256) -> float:
    """The Fréchet distance between two image sets in the feature space of ``encoder`` (chapter 4).

    ``real``/``fake``: float images in [0, 1], ``[N, 3, H, W]`` (resized to ``size`` and normalised with the
    fundus statistics, as the book's encoders see them). torchmetrics' ``FrechetInceptionDistance`` with the
    book's own encoder as the feature extractor — the formula of FID, but not Inception's features, so its values
    are not comparable with published FIDs.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance  # seconds to import: only chapter 4 needs it
    device = next(encoder.parameters()).device
    was = encoder.training
    fid = FrechetInceptionDistance(feature=_FDFeatures(encoder.eval(), size), normalize=True).to(device)
    try:
        for imgs, is_real in ((real, True), (fake, False)):
            for i in range(0, len(imgs), bs):
                fid.update(imgs[i:i + bs].to(device), real=is_real)
        return float(fid.compute())
    finally:
        encoder.train(was)


class _FDFeatures(torch.nn.Module):
    """``encoder`` on float images in [0, 1], resized to ``size`` and normalised with the fundus statistics (the
    feature extractor of :func:`frechet_distance` and :func:`frechet_difference`)."""

    def __init__(self, encoder: torch.nn.Module, size: int | None):
        super().__init__()
        self.enc, self.size, self.num_features = encoder, size, int(encoder.num_features)

    def forward(self, x):
        if self.size is not None and x.shape[-1] != self.size:
            x = torch.nn.functional.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        return self.enc(normalize(x.float(), "fundus")).float()


@torch.no_grad()
def _fd_features(encoder: torch.nn.Module, imgs: torch.Tensor, size: int | None, bs: int = 256) -> np.ndarray:
    """:class:`_FDFeatures` of ``imgs`` as a float64 array."""
    device = next(encoder.parameters()).device
    features = _FDFeatures(encoder, size).to(device)
    was = encoder.training
    encoder.eval()
    try:
        return torch.cat([features(imgs[i:i + bs].to(device)).double().cpu()
                          for i in range(0, len(imgs), bs)]).numpy()
    finally:
        encoder.train(was)


def _frechet(fa: np.ndarray, fb: np.ndarray) -> float:
    """The Fréchet distance between Gaussians fitted to two feature sets (the formula of FID).

    tr √(Σa Σb) is the nuclear norm of Xb Xaᵀ / √((na − 1)(nb − 1)) for centred features X: an SVD of an
    na × nb matrix instead of a square root of a d × d one — exact, and fast for wide features (2,048 for a
    ResNet-50) and few images.
    """
    xa, xb = fa - fa.mean(0), fb - fb.mean(0)
    scale = np.sqrt((len(fa) - 1) * (len(fb) - 1))
    mu = fa.mean(0) - fb.mean(0)
    nuclear = np.linalg.svd(xa @ xb.T, compute_uv=False).sum() / scale
    return float(mu @ mu + (xa ** 2).sum() / (len(fa) - 1) + (xb ** 2).sum() / (len(fb) - 1) - 2 * nuclear)


def frechet_difference(encoder: torch.nn.Module, real: torch.Tensor, fake_a: torch.Tensor, fake_b: torch.Tensor,
                       size: int | None = None, n_boot: int = 200, seed: int = 0) -> dict:
    """Fréchet distance of ``fake_a`` minus that of ``fake_b`` (to the same ``real`` set), with a 95 % bootstrap
    interval: each resample redraws the real and both generated sets (chapter 4's guidance claim; the interval
    holds the noise of finite image sets, not of training the generator again)."""
    fr, fa, fb = (_fd_features(encoder, x, size) for x in (real, fake_a, fake_b))
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot):
        r = fr[rng.integers(0, len(fr), len(fr))]
        diffs.append(_frechet(fa[rng.integers(0, len(fa), len(fa))], r) -
                     _frechet(fb[rng.integers(0, len(fb), len(fb))], r))
    a, b = _frechet(fa, fr), _frechet(fb, fr)
    return {"a": a, "b": b, "diff": a - b, "lo": float(np.percentile(diffs, 2.5)),
            "hi": float(np.percentile(diffs, 97.5))}
