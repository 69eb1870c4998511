"""Fine-tuning recipes over ``nn.Sequential(encoder, head)`` with fastai's ``freeze``/``unfreeze``.

First used in chapter 1 (SimCLR: label efficiency, SSL init vs random init with
1 %, 10 % and 100 % of the labels); chapter 6 (LP / FT / LP-FT) extends it.
The head here is multi-task: one linear layer whose outputs are split into one
block of logits per task, so one fine-tuning run serves every SynthRetina task.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from fastai.callback.core import Callback, CancelValidException
from torch import nn

from .data import dataloaders
from .evaluation import label_subset, metrics
from .table import ImageTable


def classifier(encoder: nn.Module, n_classes) -> nn.Sequential:
    """``nn.Sequential(encoder, Linear)`` with ``sum(n_classes)`` outputs (one block of logits per task)."""
    n = [n_classes] if isinstance(n_classes, int) else list(n_classes)
    return nn.Sequential(encoder, nn.Linear(int(encoder.num_features), sum(n)))


def two_groups(model: nn.Sequential) -> list:
    """fastai splitter: group 0 = the encoder, group 1 = the head (``freeze`` trains the head only)."""
    return [list(model[0].parameters()), list(model[1].parameters())]


def vit_layer_groups(model: nn.Sequential) -> list:
    """fastai splitter for ``nn.Sequential(timm ViT, head)``, one parameter group per depth (chapter 3, RETFound).

    Group 0: patch embedding, CLS/register tokens and positional embedding; groups 1…n: the ViT's blocks; group
    n + 1: everything after the blocks (final norms, head). The same layer ids as the MAE authors' layer-wise
    decay, so :func:`layer_decay_lrs` gives the learning rate of each group.
    """
    vit, head = model[0], model[1]
    first = [p for n, p in vit.named_parameters() if n.startswith(("patch_embed", "cls_token", "reg_token",
                                                                     "pos_embed"))]
    blocks = [list(b.parameters()) for b in vit.blocks]
    seen = {id(p) for g in [first] + blocks for p in g}
    last = [p for p in vit.parameters() if id(p) not in seen] + list(head.parameters())
    return [first] + blocks + [last]


def layer_decay_lrs(base_lr: float, decay: float, n_blocks: int) -> np.ndarray:
    """Learning rate per :func:`vit_layer_groups` group: ``base_lr · decay^(n_blocks + 1 − layer_id)``.

    The head (layer id ``n_blocks + 1``) trains at ``base_lr``, each block below at ``decay`` times the one above
    (RETFound fine-tunes with decay 0.65). Pass the array as fastai's ``lr`` to ``fit_one_cycle``.
    """
    return np.array([base_lr * decay ** (n_blocks + 1 - i) for i in range(n_blocks + 2)])


class _NoValidation(Callback):
    """Skip fastai's per-epoch validation: fine-tuning here reads only the test split at the end, and on a
    small label subset (many short epochs) validating every epoch would cost more than training."""

    def before_validate(self):
        raise CancelValidException()


class MultiTaskLoss(nn.Module):
    """Sum over tasks of the cross-entropy of each task's block of logits (targets ``[B, n_tasks]``)."""

    def __init__(self, n_classes, label_smoothing: float = 0.0):
        super().__init__()
        self.n_classes, self.label_smoothing = list(n_classes), float(label_smoothing)

    def forward(self, pred, y):
        y = y.view(len(pred), -1)
        return sum(F.cross_entropy(p, y[:, i], label_smoothing=self.label_smoothing)
                   for i, p in enumerate(pred.split(self.n_classes, dim=1)))


def fine_tune(encoder: nn.Module, table: ImageTable, tasks, fraction: float = 1.0, seed: int = 0,
              epochs: int = 6, freeze_epochs: int = 1, lr: float = 2e-3, lr_mult: float = 10, min_steps: int = 100,
              bs: int = 64, size: int | None = None, device=None, layer_decay: float | None = None,
              label_smoothing: float = 0.0, warmup: float = 0.1, wd: float | None = None) -> dict:
    """Fine-tune ``encoder`` on ``fraction`` of the training labels of every task in ``tasks``; test metrics per task.

    fastai's ``fine_tune``: ``freeze_epochs`` with the encoder frozen (head
    only; BatchNorm layers stay trainable, fastai's default), then everything
    unfrozen with discriminative learning rates (encoder ``lr/lr_mult``, head
    ``lr``, both halved as fastai does). Small label subsets get more epochs so every run takes at
    least ``min_steps`` optimiser steps. The label subset is stratified on the
    first task and drawn with ``seed`` (the same subset as the probes). The
    encoder is changed in place: pass a copy to keep it.

    With ``layer_decay`` (chapter 3, RETFound's recipe; ``encoder`` a timm ViT) there is no frozen phase: one
    ``fit_one_cycle`` over every layer, one parameter group per depth (:func:`vit_layer_groups`) at
    :func:`layer_decay_lrs`, warm-up over the first ``warmup`` of the steps then cosine decay, Adam's β1 held at
    0.9 (AdamW as RETFound), weight decay ``wd`` and ``label_smoothing`` in the loss.
    """
    from fastai.learner import Learner
    import fastai.callback.all  # noqa: F401
    tasks = list(tasks)
    tr = table.split_index("train")
    sub = tr[label_subset(table.target(tasks[0])[tr], fraction, seed)]
    keep = np.concatenate([sub, table.split_index("valid"), table.split_index("test")])
    small = table.take(keep)
    n = [table.n_classes(t) for t in tasks]
    dls = dataloaders(small, tasks, bs=bs, size=size, device=device, augment=True, seed=seed)
    steps = max(len(dls.train), 1)
    epochs = max(int(epochs), math.ceil(min_steps / steps))
    skip = _NoValidation()
    model = classifier(encoder, n)
    extra = {} if wd is None else {"wd": wd}
    learn = Learner(dls, model, loss_func=MultiTaskLoss(n, label_smoothing), cbs=[skip],
                    splitter=two_groups if layer_decay is None else vit_layer_groups, **extra)
    if dls.device is not None and torch.device(dls.device).type == "cuda":
        learn = learn.to_fp16()
    with learn.no_bar(), learn.no_logging():
        if layer_decay is None:
            learn.fine_tune(epochs, base_lr=lr, freeze_epochs=freeze_epochs, lr_mult=lr_mult)
        else:
            learn.fit_one_cycle(epochs, layer_decay_lrs(lr, layer_decay, len(encoder.blocks)), pct_start=warmup,
                                moms=(0.9, 0.9, 0.9))
        learn.remove_cb(skip)
        preds, targs = learn.get_preds(dl=dls[2])
    preds, targs = preds.float(), targs.view(len(preds), -1).numpy()
    out = {}
    for i, (task, p) in enumerate(zip(tasks, preds.split(n, dim=1))):
        out[task] = metrics(targs[:, i], p.softmax(1).numpy(), table.tasks.get(task) == "ordinal")
    out["_epochs"] = epochs
    return out


def train_classifier(table: ImageTable, tasks, arch: str = "small_cnn_narrow", epochs: int = 10, lr: float = 3e-3,
                     bs: int = 64, size: int | None = None, seed: int = 0, device=None, name: str = "classifier",
                     bar: bool = False) -> nn.Sequential:
    """A supervised multi-task classifier (``classifier(encoder, …)``), trained once on the training split of
    ``table`` with fundus augmentations and read back afterwards (keyed by everything that made it).

    Chapter 4 grades generated images with one trained on real images, and trains one on generated images (the
    classification accuracy score).
    """
    from fastai.learner import Learner
    import fastai.callback.all  # noqa: F401
    from . import env, models, runs
    tasks = list(tasks)
    n = [table.n_classes(t) for t in tasks]
    env.seed_everything(seed)
    model = classifier(models.create_encoder(arch)[0], n)
    dls = dataloaders(table, tasks, bs=bs, size=size, device=device, augment=True, seed=seed)
    learn = Learner(dls, model, loss_func=MultiTaskLoss(n), cbs=[_NoValidation()])
    if dls.device is not None and torch.device(dls.device).type == "cuda":
        learn = learn.to_fp16()
    key = runs.run_key(kind="classifier", arch=arch, tasks=tasks, epochs=epochs, lr=lr, bs=bs, size=size, seed=seed,
                       data=table.fingerprint())
    runs.load_or_train(learn, key, epochs, lr, name=name, bar=bar)
    return model.eval()


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, n_classes, bs: int = 256) -> list:
    """Class probabilities per task (one ``[N, n]`` array each) for float images in [0, 1] ``[N, 3, H, W]``."""
    from .views import FUNDUS_MEAN, FUNDUS_STD
    device = next(model.parameters()).device
    mean = torch.tensor(FUNDUS_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(FUNDUS_STD, device=device).view(1, 3, 1, 1)
    model = model.eval()
    out = torch.cat([model((images[i:i + bs].to(device).float() - mean) / std).float().cpu()
                     for i in range(0, len(images), bs)])
    n = [n_classes] if isinstance(n_classes, int) else list(n_classes)
    return [p.softmax(1).numpy() for p in out.split(n, dim=1)]
