"""Fine-tuning recipes over ``nn.Sequential(encoder, head)`` with fastai's ``freeze``/``unfreeze``.

First used in chapter 1 (SimCLR: label efficiency, SSL init vs random init with
1 %, 10 % and 100 % of the labels); chapter 6 (LP / FT / LP-FT) extends it.
The head here is multi-task: one linear layer whose outputs are split into one
block of logits per task, so one fine-tuning run serves every SynthRetina task.
"""
from __future__ import annotations

import math

import fastai.callback.all  # noqa: F401
import numpy as np
import torch
import torch.nn.functional as F
from fastai.callback.core import Callback, CancelValidException
from fastai.learner import Learner
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits
from torch import nn

from . import env, models, runs
from .data import dataloaders
from .evaluation import extract_features, label_subset, metrics
from .runs import mixed_precision
from .table import ImageTable
from .views import normalize


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
    """Sum over tasks of the cross-entropy of each task's block of logits (targets ``[B, n_tasks]``); ``weights``
    (one class-weight vector per task, or None) re-weights the classes as chapter 6 does for imbalanced tasks."""

    def __init__(self, n_classes, label_smoothing: float = 0.0, weights=None):
        super().__init__()
        self.n_classes, self.label_smoothing = list(n_classes), float(label_smoothing)
        self.weights = list(weights) if weights is not None else [None] * len(self.n_classes)

    def forward(self, pred, y):
        y = y.view(len(pred), -1)
        return sum(F.cross_entropy(p, y[:, i], label_smoothing=self.label_smoothing,
                                   weight=None if w is None else w.to(p.device, p.dtype))
                   for i, (p, w) in enumerate(zip(pred.split(self.n_classes, dim=1), self.weights)))


def balanced_weights(y: np.ndarray, n_classes: int) -> torch.Tensor:
    """Class weights n / (k · count), as scikit-learn's ``class_weight="balanced"`` (absent classes get 0)."""
    counts = np.bincount(y, minlength=n_classes).astype(float)
    return torch.tensor(np.where(counts > 0, len(y) / (n_classes * np.maximum(counts, 1)), 0.0), dtype=torch.float32)


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
    learn = mixed_precision(learn)  # bf16 on recent GPUs, fp16 on older ones, none on a CPU
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


# the code a trained classifier's key holds (an edit here trains it again; tests/test_run_keys.py)
CLASSIFIER_CODE = ("helpers.transfer:classifier", "helpers.transfer:_NoValidation", "helpers.transfer:MultiTaskLoss",
                   "helpers.transfer:train_classifier", "helpers.models:create_encoder", "helpers.models:SmallCNN",
                   "helpers.views", "helpers.data:dataloaders", "helpers.runs:load_or_train",
                   "helpers.runs:mixed_precision")


# the code behind chapter 6's cached LP / FT / LP-FT results (their key holds its hash): this module, the views,
# the dataloaders, the training loop and the metrics
STRATEGY_CODE = ("helpers.transfer", "helpers.views", "helpers.data:dataloaders", "helpers.runs:load_or_train",
                 "helpers.runs:mixed_precision", "helpers.evaluation:metrics", "helpers.evaluation:extract_features")


def train_classifier(table: ImageTable, tasks, arch: str = "small_cnn_narrow", epochs: int = 10, lr: float = 3e-3,
                     bs: int = 64, size: int | None = None, seed: int = 0, device=None, name: str = "classifier",
                     bar: bool = False) -> nn.Sequential:
    """A supervised multi-task classifier (``classifier(encoder, …)``), trained once on the training split of
    ``table`` with fundus augmentations and read back afterwards (keyed by everything that made it).

    Chapter 4 grades generated images with one trained on real images, and trains one on generated images (the
    classification accuracy score).
    """
    tasks = list(tasks)
    n = [table.n_classes(t) for t in tasks]
    env.seed_everything(seed)
    model = classifier(models.create_encoder(arch)[0], n)
    dls = dataloaders(table, tasks, bs=bs, size=size, device=device, augment=True, seed=seed)
    learn = Learner(dls, model, loss_func=MultiTaskLoss(n), cbs=[_NoValidation()])
    learn = mixed_precision(learn)  # bf16 on recent GPUs, fp16 on older ones, none on a CPU
    key = runs.run_key(kind="classifier", arch=arch, tasks=tasks, epochs=epochs, lr=lr, bs=bs, size=size, seed=seed,
                       data=table.fingerprint(), code=runs.code_hash(*CLASSIFIER_CODE))
    runs.load_or_train(learn, key, epochs, lr, name=name, bar=bar)
    return model.eval()


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, n_classes, bs: int = 256, modality: str = "fundus") -> list:
    """Class probabilities per task (one ``[N, n]`` array each) for float images in [0, 1] ``[N, 3, H, W]``
    (normalised with ``modality``'s statistics, as the dataloaders do)."""
    device = next(model.parameters()).device
    model = model.eval()
    out = torch.cat([model(normalize(images[i:i + bs].to(device).float(), modality)).float().cpu()
                     for i in range(0, len(images), bs)])
    n = [n_classes] if isinstance(n_classes, int) else list(n_classes)
    return [p.softmax(1).numpy() for p in out.split(n, dim=1)]


# --- chapter 6: linear probing, fine-tuning, and LP-FT ------------------------------------------------------------

def fit_probe(x: np.ndarray, y: np.ndarray, max_iter: int = 1000, C: float = 1.0, balanced: bool = False):
    """The shared protocol's linear probe (standardise, then logistic regression), fitted and returned; with
    ``balanced`` the classes are weighted by inverse frequency (chapter 6, as its fine-tuning loss)."""
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, C=C,
                                                             class_weight="balanced" if balanced else None))
    with threadpool_limits(1):
        return clf.fit(x, y)


def probe_layer(clf, n_classes: int) -> nn.Linear:
    """A fitted probe as one ``nn.Linear`` on the raw features: the standardisation folded in (W / σ and
    b − (W / σ) · μ); a binary probe becomes two logits (0 and its score), so the layer's softmax is the probe's
    ``predict_proba``. Classes the probe never saw get a very negative bias. Chapter 6 starts LP-FT from it."""
    scaler, lr = clf[0], clf[-1]
    w = lr.coef_ / scaler.scale_
    b = lr.intercept_ - w @ scaler.mean_
    if w.shape[0] == 1:  # binary logistic regression: p(class 1) = sigmoid(w·x + b) = softmax([0, w·x + b])
        w, b = np.vstack([np.zeros_like(w), w]), np.r_[0.0, b]
    weight = np.zeros((n_classes, w.shape[1]))
    bias = np.full(n_classes, -30.0)
    weight[lr.classes_], bias[lr.classes_] = w, b
    layer = nn.Linear(w.shape[1], n_classes)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(weight))
        layer.bias.copy_(torch.from_numpy(bias))
    return layer


def probe_model(encoder: nn.Module, table: ImageTable, tasks, size: int | None = None, device=None,
                max_iter: int = 1000, balanced: bool = False) -> nn.Sequential:
    """``nn.Sequential(encoder, head)`` whose head is the shared linear probe of each task, fitted on the training
    split's frozen features (encoder in eval mode) and copied in with :func:`probe_layer`: linear probing, and the
    start of LP-FT. Its predictions are the probes' (a test checks it to float precision)."""
    tasks = list(tasks)
    n = [table.n_classes(t) for t in tasks]
    model = classifier(encoder, n)
    f = extract_features(encoder, table, device=device, size=size)["train"]
    tr = table.split_index("train")
    layers = [probe_layer(fit_probe(f, table.target(t)[tr], max_iter, balanced=balanced), k) for t, k in zip(tasks, n)]
    with torch.no_grad():
        model[1].weight.copy_(torch.cat([layer.weight for layer in layers]))
        model[1].bias.copy_(torch.cat([layer.bias for layer in layers]))
    return model.eval()


def strategy(encoder: nn.Module, table: ImageTable, tasks, kind: str, seed: int = 0, epochs: int = 10,
             lr: float = 3e-3, lr_mult: float = 10, bs: int = 64, size: int | None = None, device=None,
             max_iter: int = 1000, balanced: bool = False) -> nn.Sequential:
    """``nn.Sequential(encoder, head)`` adapted to ``tasks`` on ``table``'s training split by ``kind`` (chapter 6):

    - ``"lp"``: :func:`probe_model` — the shared linear probe on frozen features (encoder in eval mode, so
      BatchNorm keeps its pretrained statistics) copied into the head; the encoder is not touched;
    - ``"ft"``: a random head, then every layer trained (fastai ``unfreeze``, discriminative learning rates
      ``slice(lr / lr_mult, lr)``, ``fit_one_cycle``; BatchNorm in training mode);
    - ``"lpft"``: the probe's head, then the same fine-tuning (Kumar et al. 2022).

    With ``balanced`` the probe and the fine-tuning loss weight classes by inverse frequency (one objective for all
    three strategies, for imbalanced tasks such as "any HR"). The encoder is changed in place by ``ft``/``lpft``:
    pass a copy to keep it.
    """
    if kind not in ("lp", "ft", "lpft"):
        raise ValueError(f"unknown strategy {kind!r}; strategies: lp, ft, lpft")
    tasks = list(tasks)
    n = [table.n_classes(t) for t in tasks]
    env.seed_everything(seed)
    model = probe_model(encoder, table, tasks, size, device, max_iter, balanced) if kind != "ft" else \
        classifier(encoder, n)
    if kind == "lp":
        return model
    dls = dataloaders(table, tasks, bs=bs, size=size, device=device, augment=True, seed=seed)
    skip = _NoValidation()
    tr = table.split_index("train")
    weights = [balanced_weights(table.target(t)[tr], k) for t, k in zip(tasks, n)] if balanced else None
    learn = Learner(dls, model, loss_func=MultiTaskLoss(n, weights=weights), splitter=two_groups, cbs=[skip])
    learn = mixed_precision(learn)  # bf16 on recent GPUs, fp16 on older ones, none on a CPU
    learn.unfreeze()
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(epochs, slice(lr / lr_mult, lr))
    learn.remove_cb(skip)
    if hasattr(learn, "to_fp32"):
        learn.to_fp32()
    return learn.model.eval()


@torch.no_grad()
def feature_distortion(before: nn.Module, after: nn.Module, images: torch.Tensor, bs: int = 256,
                       modality: str = "fundus") -> float:
    """How far adaptation moved an encoder's features of ``images`` (float, [0, 1]): the mean cosine distance
    1 − cos(f_before(x), f_after(x)) — the mechanism Kumar et al. (2022) give for fine-tuning's loss out of
    distribution (chapter 6)."""
    device = next(after.parameters()).device
    before, after = before.to(device).eval(), after.to(device).eval()
    d = []
    for i in range(0, len(images), bs):
        x = normalize(images[i:i + bs].to(device).float(), modality)
        d.append(1 - F.cosine_similarity(before(x).float(), after(x).float(), dim=1).cpu())
    return float(torch.cat(d).mean())
