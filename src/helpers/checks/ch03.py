"""Checks for chapter 3's exercises (see :mod:`helpers.checks`)."""
from __future__ import annotations

import numpy as np
import torch

from ..transfer import layer_decay_lrs
from .core import ExerciseError, _call, _describe, _finite, exercise, passed


@exercise("write random_masking")
def check_random_masking(fn) -> bool:
    """Chapter 3, exercise 1: ``fn(x, mask_ratio)`` → ``(kept, mask, ids_restore)`` with MAE's semantics.

    Checked on several grids and ratios: ``len_keep = int(L · (1 − ratio))`` tokens kept per sample, mask 1 =
    removed, ``ids_restore`` a permutation whose inverse lists the kept tokens first (in the order of
    ``kept``), and a different draw for every sample.
    """
    for b, n, d, ratio in [(4, 36, 8, 0.75), (3, 36, 4, 0.9), (2, 49, 6, 0.5), (5, 16, 3, 0.0)]:
        x = torch.randn(b, n, d, generator=torch.Generator().manual_seed(n + b))
        torch.manual_seed(b)
        out = _call(fn, x.clone(), ratio, called=f"fn(x, mask_ratio) with x a ({b}, {n}, {d}) tensor (B, L, D) "
                    f"and mask_ratio the float {ratio}")
        if not isinstance(out, (tuple, list)) or len(out) != 3 or not all(torch.is_tensor(o) for o in out):
            raise ExerciseError("return three tensors: (kept, mask, ids_restore); got "
                                + (_describe(out) if not isinstance(out, (tuple, list)) else
                                   f"{_describe(out)} of " + ", ".join(_describe(o) for o in out)))
        kept, mask, ids_restore = out
        len_keep = int(n * (1 - ratio))
        if tuple(kept.shape) != (b, len_keep, d):
            rounded = kept.ndim == 3 and kept.shape[1] == round(n * (1 - ratio))
            hint = " (int(), not round(): MAE truncates)" if rounded else ""
            raise ExerciseError(f"with L = {n} and ratio {ratio}, keep len_keep = int(L · (1 − ratio)) = {len_keep} "
                                f"tokens per sample; got kept of shape {tuple(kept.shape)}{hint}")
        if tuple(mask.shape) != (b, n) or tuple(ids_restore.shape) != (b, n):
            raise ExerciseError(f"mask and ids_restore have shape (B, L) = {(b, n)}")
        if mask.dtype == torch.bool:
            raise ExerciseError("mask is a float tensor, 1.0 = removed and 0.0 = kept (the loss multiplies by it), "
                                "not a bool one: build it with torch.ones(B, L)")
        if not torch.equal(mask.sum(1), torch.full((b,), float(n - len_keep), dtype=mask.dtype)):
            if torch.equal(mask.sum(1), torch.full((b,), float(len_keep), dtype=mask.dtype)):
                raise ExerciseError("mask is 1 where a token is *removed* and 0 where it is kept")
            raise ExerciseError(f"each row of mask has L − len_keep = {n - len_keep} ones (removed tokens)")
        if not torch.equal(torch.sort(ids_restore, 1).values, torch.arange(n).expand(b, n)):
            raise ExerciseError("ids_restore must be a permutation of 0 … L−1 in every row (argsort of the shuffle)")
        ids_shuffle = torch.argsort(ids_restore, 1)  # undoing ids_restore gives the shuffle
        want = torch.gather(x, 1, ids_shuffle[:, :len_keep, None].expand(-1, -1, d))
        if not torch.allclose(kept, want):
            raise ExerciseError("kept must be x gathered at the first len_keep positions of the shuffle, and "
                                "ids_restore = argsort(ids_shuffle) so that it undoes that shuffle")
        if not torch.equal(torch.gather(mask, 1, ids_shuffle), (torch.arange(n) >= len_keep).float().expand(b, n)
                           .to(mask.dtype)):
            raise ExerciseError("mask must be 0 exactly at the kept tokens: build it in shuffled order "
                                "(len_keep zeros, then ones) and un-shuffle it with ids_restore")
        if b > 1 and 0 < ratio and all(torch.equal(ids_restore[0], r) for r in ids_restore[1:]):
            raise ExerciseError("every sample needs its own random order: draw noise of shape (B, L)")
    return passed("your random_masking keeps int(L·(1−ratio)) tokens per sample, marks the removed ones with 1 "
                  "and ids_restore undoes the shuffle (four grids and ratios)")


@exercise("predict the loss at mask ratio 0")
def check_ratio_zero_loss(answer, measured) -> bool:
    """Chapter 3, exercise 2: the MAE loss when nothing is masked; ``measured`` is the chapter's own computation."""
    if not _finite(answer):
        raise ExerciseError(f"answer with one finite number (a float such as 0.5); got {answer!r}")
    if abs(float(answer)) > 1e-6:
        raise ExerciseError("which patches does the MAE loss average over? How many of them are there at ratio 0?")
    if not (_finite(measured) and abs(float(measured)) <= 1e-6):
        shown = f"{float(measured):.4g}" if _finite(measured) else repr(measured)
        raise ExerciseError(f"your prediction is right, but the measured loss is {shown}: did you compute it "
                            "with mask_ratio=0 (one number, as float(mae.mae_loss(...)))?")
    return passed("right: the loss counts removed patches only, and at ratio 0 there are none — the loss is 0 "
                  "whatever the decoder outputs, so nothing would be learned. Masking *is* the task.")


@exercise("set a layer-decay schedule")
def check_layer_decay(fn) -> bool:
    """Chapter 3, exercise 3: ``fn(base_lr, decay, n_blocks)`` → one learning rate per
    :func:`helpers.transfer.vit_layer_groups` group, as :func:`helpers.transfer.layer_decay_lrs`."""
    for base, decay, n in [(1e-3, 0.65, 3), (5e-3, 0.75, 12), (2e-4, 0.5, 1)]:
        out = _call(fn, base, decay, n, called=f"fn(base_lr, decay, n_blocks) with base_lr={base}, decay={decay} "
                    f"and n_blocks={n} (an int)")
        want = layer_decay_lrs(base, decay, n)
        try:
            got = np.asarray(out, float).ravel()
        except (TypeError, ValueError, RuntimeError):
            raise ExerciseError(f"return the learning rates as a list or array of {n + 2} numbers, one per group "
                                f"(embeddings, the blocks, the head); got {_describe(out)}") from None
        if got.shape != want.shape:
            raise ExerciseError(f"{n} blocks give {n + 2} groups (embeddings, the blocks, the head): "
                                f"return {n + 2} learning rates, got {got.size}")
        if not np.allclose(got, want, rtol=1e-6):
            if np.allclose(got, want[::-1], rtol=1e-6):
                raise ExerciseError("reversed: the head (last group) trains at base_lr, the patch embedding "
                                    "(first group) at the smallest rate")
            if np.allclose(got, want * decay, rtol=1e-6) or np.allclose(got, want / decay, rtol=1e-6):
                raise ExerciseError("off by one layer: group i gets base_lr · decay^(n_blocks + 1 − i), so the "
                                    "head (i = n_blocks + 1) gets base_lr itself")
            raise ExerciseError(f"for base_lr={base}, decay={decay}, {n} blocks expected {np.round(want, 8)}")
    return passed("your schedule matches the library's: the head at base_lr, each layer below × decay")
