"""DINO as fastai pieces: the head, the loss with centring and sharpening, the teacher Callback, the Learner.

For chapter 2 ("DINO: self-distillation without labels"), which writes the loss
out; this module holds the library version (tested against lightly's
``DINOLoss``, ``DINOProjectionHead`` and ``update_momentum``). Same shape as
:mod:`helpers.methods.simclr`: a plain loss function a student can replace, a
Callback that owns the state (teacher, centre, teacher temperature), and
``dino_learner(dls, encoder, **knobs)``. Views come from
:func:`helpers.views.multi_crop`, the EMA teacher from :class:`helpers.runs.EMA`.
"""
from __future__ import annotations

import copy

import fastai.callback.all  # noqa: F401
import torch
import torch.nn.functional as F
from fastai.callback.core import Callback
from fastai.learner import Learner
from torch import nn

from .. import distributed
from ..runs import EMA, mixed_precision
from ..views import multi_crop


class DINOHead(nn.Module):
    """MLP (Linear–GELU–Linear–GELU–Linear to a bottleneck) → L2-normalise → weight-normalised Linear, no bias.

    With ``norm_last_layer`` the last layer's weight norm ``g`` is fixed at 1,
    so every output is a cosine between the normalised bottleneck and a unit
    prototype (DINO's stabilising choice).
    """

    def __init__(self, in_dim: int, out_dim: int = 4096, hidden_dim: int = 512, bottleneck_dim: int = 128,
                 norm_last_layer: bool = True):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, hidden_dim),
                                 nn.GELU(), nn.Linear(hidden_dim, bottleneck_dim))
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        last = nn.Linear(bottleneck_dim, out_dim, bias=False)
        self.last_layer = torch.nn.utils.parametrizations.weight_norm(last)
        g = self.last_layer.parametrizations.weight.original0
        g.data.fill_(1)
        g.requires_grad_(not norm_last_layer)

    def forward(self, x):
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))


def dino_loss(student_out, teacher_out, center: torch.Tensor, t_student: float, t_teacher: float) -> torch.Tensor:
    """Cross-entropy between the sharpened, centred teacher and the student, over all pairs of different views.

    ``teacher_out``: one ``[B, K]`` tensor per global view; ``student_out``:
    one per view, the global views first (same order as the teacher's), then
    the local ones. The pair (teacher view i, student view i) is skipped.
    """
    t = [F.softmax((o - center) / t_teacher, dim=-1).detach() for o in teacher_out]
    s = [F.log_softmax(o / t_student, dim=-1) for o in student_out]
    total, n = 0.0, 0
    for i, ti in enumerate(t):
        for j, sj in enumerate(s):
            if i == j:
                continue
            total = total + (-(ti * sj).sum(-1)).mean()
            n += 1
    if n == 0:
        raise ValueError("DINO needs at least two views: one teacher view and one other student view")
    return total / n


@torch.no_grad()
def update_center(center: torch.Tensor, teacher_out, momentum: float) -> torch.Tensor:
    """center ← m · center + (1 − m) · mean of the teacher outputs (averaged over processes when distributed).

    On several processes each holds the same number of images (book page
    "Scaling out"), so the mean of the processes' means is the global batch's mean.
    """
    batch = torch.cat(list(teacher_out)).mean(0, keepdim=True)
    if distributed.world_size() > 1:
        torch.distributed.all_reduce(batch)
        batch = batch / distributed.world_size()
    return center * momentum + batch * (1 - momentum)


def teacher_temperature(epoch: int, warmup_epochs: int, warmup_temp: float, temp: float) -> float:
    """Linear warm-up of the teacher temperature from ``warmup_temp`` to ``temp`` over ``warmup_epochs`` epochs."""
    if epoch >= warmup_epochs:
        return temp
    if warmup_epochs == 1:
        return warmup_temp
    return warmup_temp + (temp - warmup_temp) * epoch / (warmup_epochs - 1)


class DINOModel(nn.Module):
    """Student (encoder + head) and its teacher (an EMA copy, never trained by gradients)."""

    def __init__(self, encoder: nn.Module, out_dim: int = 4096, hidden_dim: int = 512, bottleneck_dim: int = 128,
                 norm_last_layer: bool = True):
        super().__init__()
        self.student = nn.Sequential(encoder, DINOHead(int(encoder.num_features), out_dim, hidden_dim, bottleneck_dim,
                                                       norm_last_layer))
        self.teacher = copy.deepcopy(self.student)
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    @property
    def encoder(self):
        return self.student[0]

    def forward(self, crops):
        """``crops``: (global views, local views) as lists of tensors; returns (student outputs, teacher outputs)."""
        globals_, locals_ = crops
        n = len(globals_)
        s = list(self.student(torch.cat(globals_)).chunk(n))
        if locals_:
            s += list(self.student(torch.cat(locals_)).chunk(len(locals_)))
        with torch.no_grad():
            t = list(self.teacher(torch.cat(globals_)).chunk(n))
        return s, t


class DINO(Callback):
    """fastai Callback holding DINO's state.

    ``before_batch``: the batch becomes multi-crop views; ``after_loss``: the
    centre moves toward the teacher's mean output; ``before_epoch``: the
    teacher temperature follows its warm-up. The teacher's EMA (cosine momentum
    schedule, ``after_step``) is :class:`helpers.runs.EMA`, which
    :func:`dino_learner` adds. Diagnostics per batch go to ``self.history``
    (teacher entropy, KL to uniform, student–teacher agreement); per epoch to
    ``self.epochs``: their means and the teacher's momentum, plus what ``monitor(teacher)`` returns — chapter 2 passes
    :func:`helpers.evaluation.collapse_diagnostics` on a monitor set
    (embedding spread, k-NN balanced accuracy).
    """
    order = 1

    def __init__(self, out_dim: int, n_local: int = 4, global_scale=(0.5, 1.0), local_scale=(0.05, 0.25),
                 local_size: int | None = None, t_student: float = 0.1, t_teacher: float = 0.04,
                 warmup_t_teacher: float = 0.04, warmup_epochs: int = 0, center_momentum: float = 0.9,
                 momentum: float = 0.996, teacher_horizon: float | None = None, centring: bool = True, views=None,
                 monitor=None):
        super().__init__()
        self.out_dim, self.n_local, self.global_scale, self.local_scale = out_dim, n_local, global_scale, local_scale
        self.local_size, self.t_student, self.t_teacher_final = local_size, t_student, t_teacher
        self.warmup_t_teacher, self.warmup_epochs, self.center_momentum = warmup_t_teacher, warmup_epochs, center_momentum
        self.momentum, self.centring, self.views, self.monitor = momentum, centring, views, monitor
        self.teacher_horizon = teacher_horizon
        self.center = torch.zeros(1, out_dim)
        self.t_teacher, self.history, self.epochs = t_teacher, [], []

    def before_fit(self):
        self.center = self.center.to(next(self.learn.model.parameters()).device)

    def before_epoch(self):
        self.t_teacher = teacher_temperature(self.epoch, self.warmup_epochs, self.warmup_t_teacher,
                                             self.t_teacher_final)
        self._first = len(self.history)

    def after_epoch(self):
        rows = self.history[self._first:]
        ema = next((cb for cb in self.learn.cbs if isinstance(cb, EMA)), None)
        rec = {"epoch": self.epoch + 1, "t_teacher": self.t_teacher,
               "momentum": None if ema is None else float(ema.momentum),
               **{k: sum(r[k] for r in rows) / max(len(rows), 1) for k in ("entropy", "kl_uniform", "agreement")}}
        if self.monitor is not None:
            rec.update(self.monitor(distributed.unwrap(self.learn.model).teacher))
        self.epochs.append(rec)

    def before_batch(self):
        x = self.learn.xb[0]
        with torch.no_grad():
            self.learn.xb = (multi_crop(x, n_local=self.n_local, global_scale=self.global_scale,
                                        local_scale=self.local_scale, local_size=self.local_size, views=self.views),)

    def after_loss(self):
        if not self.training:
            return
        s, t = self.learn.pred
        with torch.no_grad():
            p = F.softmax((torch.cat(t) - self.center) / self.t_teacher, dim=-1)
            entropy = float(-(p * p.clamp_min(1e-12).log()).sum(-1).mean())
            mean_p = p.mean(0)
            kl_uniform = float((mean_p * (mean_p.clamp_min(1e-12) * self.out_dim).log()).sum())
            # student-teacher agreement: the student's top prototype on one global view is the teacher's on the other
            agree = [float((s[j].argmax(-1) == t[i].argmax(-1)).float().mean())
                     for i in range(len(t)) for j in range(len(t)) if i != j]
            self.history.append({"entropy": entropy, "kl_uniform": kl_uniform, "t_teacher": self.t_teacher,
                                 "agreement": sum(agree) / max(len(agree), 1)})
            if self.centring:
                self.center = update_center(self.center, t, self.center_momentum)


def dino_learner(dls, encoder: nn.Module, out_dim: int = 4096, hidden_dim: int = 512, bottleneck_dim: int = 128,
                 norm_last_layer: bool = True, loss_fn=None, wd: float = 0.04, cbs=None, **knobs):
    """A fastai Learner for DINO pretraining; ``knobs`` go to the :class:`DINO` callback.

    ``dls`` must yield images in [0, 1] (``dataloaders(..., augment=False,
    normalize=False)``); ``loss_fn(student_out, teacher_out, center,
    t_student, t_teacher)`` replaces the library's :func:`dino_loss`.
    """
    cb = DINO(out_dim, **knobs)
    teacher = EMA(lambda m: m.student, lambda m: m.teacher, momentum=cb.momentum,  # cosine schedule to 1
                  horizon=cb.teacher_horizon)  # base scaled to the run's length (helpers.runs.horizon_momentum)
    model = DINOModel(encoder, out_dim, hidden_dim, bottleneck_dim, norm_last_layer)
    fn = loss_fn or dino_loss
    learn = Learner(dls, model, loss_func=lambda pred, *y: fn(pred[0], pred[1], cb.center, cb.t_student,
                                                                 cb.t_teacher),
                    cbs=[cb, teacher] + list(cbs or []), wd=wd)
    learn.dino = cb
    learn = mixed_precision(learn)  # bf16 on recent GPUs, fp16 on older ones, none on a CPU
    return learn


@torch.no_grad()
def cls_attention(vit: nn.Module, x: torch.Tensor, block: int = -1) -> torch.Tensor:
    """Self-attention of the CLS token over the patches in one block of a timm ViT: ``[B, heads, h, w]``.

    Recomputed from the block's own ``qkv`` on the input its attention sees
    (the output of ``norm1``, caught with a forward hook), exactly as the block
    computes it — softmax(q·kᵀ/√d) — so fused attention kernels need not expose
    their weights. Each map sums to at most 1 (the rest goes to the CLS and
    register tokens). Chapter 2 overlays these maps on fundus images.
    """
    blk = vit.blocks[block]
    seen = {}
    hook = blk.norm1.register_forward_hook(lambda m, i, o: seen.__setitem__("x", o))
    was = vit.training
    try:
        vit.eval()
        vit(x)
    finally:
        hook.remove()
        vit.train(was)
    h = seen["x"]
    a = blk.attn
    b, n, c = h.shape
    qkv = a.qkv(h).reshape(b, n, 3, a.num_heads, c // a.num_heads).permute(2, 0, 3, 1, 4)
    q, k = a.q_norm(qkv[0]), a.k_norm(qkv[1])
    attn = (q * a.scale @ k.transpose(-2, -1)).softmax(-1)
    prefix = getattr(vit, "num_prefix_tokens", 1)
    gh, gw = vit.patch_embed.dynamic_feat_size(x.shape[-2:]) if hasattr(vit.patch_embed, "dynamic_feat_size") \
        else vit.patch_embed.grid_size
    return attn[:, :, 0, prefix:].reshape(b, a.num_heads, gh, gw)


def attention_share(attention: torch.Tensor, masks: torch.Tensor) -> dict:
    """How much of the CLS attention falls inside ``masks``, against the masks' share of the image.

    ``attention``: ``[B, h, w]`` (heads averaged), ``masks``: ``[B, H, W]``
    booleans at image resolution. Each mask is averaged over the patch grid
    (the fraction of every patch it covers); per image, attention share =
    Σ attention·mask / Σ attention and area share = mean of the mask. Returns
    the means over images with a non-empty mask, their ratio (1 = no
    preference, chapter 2's target is ≥ 2) and the per-image values (for a
    bootstrap over images).
    """
    m = F.adaptive_avg_pool2d(masks.float()[:, None], attention.shape[-2:])[:, 0]
    keep = m.flatten(1).sum(1) > 0
    if not bool(keep.any()):
        raise ValueError("every mask is empty: nothing to measure attention against")
    a, m = attention[keep].flatten(1), m[keep].flatten(1)
    att = (a * m).sum(1) / a.sum(1)
    area = m.mean(1)
    return {"attention_share": float(att.mean()), "area_share": float(area.mean()),
            "ratio": float(att.mean() / area.mean()), "n_images": int(keep.sum()),
            "per_image_attention": att.tolist(), "per_image_area": area.tolist()}
