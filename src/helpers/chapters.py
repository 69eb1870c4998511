"""Encoders trained by earlier chapters, read back from their caches.

Chapters 4–6 measure against, or start from, the encoders of chapters 1, 2 and 5: these functions rebuild each
chapter's table and knobs and call that chapter's own load-or-train, so the run keys are the chapter's and a cached
run is read back in a second (trained here only when that chapter never ran on this machine). ``P`` is the calling
chapter's profile, ``data_seed`` its ``SEED`` (the tables' seed).
"""
from __future__ import annotations

from . import data, evaluation


def chapter_table(P, size: int, data_seed: int = 0, root=None, **options):
    """The book's table at ``size`` px, as every chapter loads it (extra SynthRetina ``options`` for chapter 5)."""
    return data.load(P.data.source, root=root, size=size, n_train=P.data.n_train, n_valid=P.data.n_valid,
                     n_test=P.data.n_test, seed=data_seed, **{**dict(P.data.options), **options})


def simclr_encoder(P, seed: int, device, data_seed: int = 0, root=None):
    """Chapter 1's SimCLR encoder for ``seed``."""
    from .methods import simclr
    S = P.simclr
    model, _ = simclr.pretrain(chapter_table(P, S.image_size, data_seed, root), S, seed, device, save_at=S.save_at,
                               bar=False)
    return model.encoder.eval()


def dino_encoder(P, seed: int, device, data_seed: int = 0, root=None):
    """Chapter 2's DINO teacher backbone for ``seed`` (its per-epoch collapse watch as chapter 2 runs it)."""
    from .methods import dino
    D = P.dino
    t = chapter_table(P, D.image_size, data_seed, root)
    monitor = evaluation.monitor_set(t, D.monitor_task, n=D.monitor_size, size=D.image_size)
    watch = lambda teacher: evaluation.collapse_diagnostics(teacher[0], monitor, k=P.protocol.knn_k,  # noqa: E731
                                                            embed=teacher[1].mlp)
    model, _ = dino.pretrain(t, D, seed, device, save_at=D.save_at, bar=False, monitor=watch)
    return model.teacher[0].eval()


def flair_encoder(P, seed: int, device, data_seed: int = 0, root=None):
    """Chapter 5's mini-FLAIR image tower for ``seed`` (before its projection)."""
    from .methods import flair
    K = P.flair
    t = chapter_table(P, K.image_size, data_seed, root, site_correlation=K.site_correlation)
    init = simclr_encoder(P, seed, device, data_seed, root) if K.init == "simclr" else None
    model, _, _ = flair.train_mini(t, K, seed, device, init=init, init_name=K.init, bar=False)
    return model.vision_model.model.eval()
