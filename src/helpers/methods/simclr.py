"""SimCLR as fastai pieces: NT-Xent, the two-view Callback, the model and its Learner factory.

Explained in chapter 1 ("SimCLR on fundus photographs"), which writes NT-Xent
out in full; this module holds the library version the Learner and the
benchmarks use (tested against lightly's ``NTXentLoss``). Views come from
:mod:`helpers.views`, the head from :mod:`helpers.models`, load-or-train from
:mod:`helpers.runs`.
"""
from __future__ import annotations

import fastai.callback.all  # noqa: F401  (fit_one_cycle, to_fp16)
import torch
import torch.nn.functional as F
from fastai.callback.core import Callback
from fastai.learner import Learner
from torch import nn

from .. import distributed
from ..models import MLPHead
from ..runs import mixed_precision
from ..views import FundusViews


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5,
                 gather_distributed: bool = False) -> torch.Tensor:
    """NT-Xent: each view's positive is its partner; the other 2N-2 views of the batch are negatives.

    With ``gather_distributed`` and several processes (book page "Scaling out"),
    the negatives are the views of the *global* batch: every process's
    projections are gathered (gradients flow back through the gather), and each
    process scores its own 2n views against all 2Wn, as lightly's
    ``NTXentLoss(gather_distributed=True)``. The mean of the W processes' losses
    is the loss of one process holding the whole batch.
    """
    n = z1.shape[0]
    z1, z2 = F.normalize(z1.float(), dim=1), F.normalize(z2.float(), dim=1)
    z = torch.cat([z1, z2])
    if gather_distributed and distributed.world_size() > 1:
        offset = distributed.rank() * n
        big1, big2 = distributed.all_gather_with_grad(z1), distributed.all_gather_with_grad(z2)
    else:
        offset, big1, big2 = 0, z1, z2
    m = big1.shape[0]                                     # images in the global batch
    sim = z @ torch.cat([big1, big2]).t() / temperature   # [2n, 2m]: my views against every view
    rows = torch.arange(n, device=z.device) + offset      # where my images sit in the global batch
    self_cols = torch.cat([rows, rows + m])
    sim = sim.masked_fill(F.one_hot(self_cols, 2 * m).bool(), float("-inf"))
    targets = torch.cat([rows + m, rows])                 # view 1's partner is its view 2, and back
    return F.cross_entropy(sim, targets)


class SimCLRModel(nn.Module):
    """Encoder f followed by projection head g; ``encoder`` is any model with ``num_features``."""

    def __init__(self, encoder: nn.Module, proj_dim: int = 128, hidden_dim: int = 512):
        super().__init__()
        self.encoder, self.head = encoder, MLPHead(int(encoder.num_features), hidden_dim, proj_dim)

    def forward(self, x):
        return self.head(self.encoder(x))


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
    """The loss a fastai Learner calls as ``loss_func(pred, *yb)``: NT-Xent of the two halves of ``pred``.

    ``gather_distributed`` (default) takes the negatives from the global batch
    when training on several processes; it changes nothing on one. A
    student's ``fn(z1, z2, temperature)`` then sees the gathered projections of
    the whole batch (the same loss on every process).
    """

    def __init__(self, temperature: float = 0.5, fn=None, gather_distributed: bool = True):
        super().__init__()
        self.temperature, self.fn, self.gather_distributed = temperature, fn, gather_distributed

    def forward(self, z, *_):
        n = z.shape[0] // 2
        z1, z2 = z[:n], z[n:]
        if self.fn is None:
            return nt_xent_loss(z1, z2, self.temperature, self.gather_distributed)
        if self.gather_distributed:
            z1, z2 = distributed.all_gather_with_grad(z1), distributed.all_gather_with_grad(z2)
        return self.fn(z1, z2, self.temperature)


def simclr_learner(dls, encoder: nn.Module, proj_dim: int = 128, hidden_dim: int = 512, temperature: float = 0.5,
                   views: nn.Module | None = None, loss_fn=None, wd: float = 1e-4, cbs=None,
                   gather_distributed: bool = True):
    """A fastai Learner for SimCLR pretraining (mixed precision when the device is CUDA).

    ``dls`` must yield images in [0, 1] (``dataloaders(..., augment=False, normalize=False)``);
    ``loss_fn(z1, z2, temperature)`` replaces the library's NT-Xent (chapter 1's exercise).
    On several processes (``python -m helpers.pretrain``) the negatives come from the global batch
    unless ``gather_distributed=False``, and the batch norms see the global batch.
    """
    model = SimCLRModel(encoder, proj_dim, hidden_dim)
    learn = Learner(dls, model, loss_func=NTXent(temperature, loss_fn, gather_distributed),
                    cbs=[SimCLRViews(views or FundusViews())] + list(cbs or []), wd=wd)
    learn = mixed_precision(learn)  # bf16 on recent GPUs, fp16 on older ones, none on a CPU
    return learn
