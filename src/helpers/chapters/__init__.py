"""Each chapter's runs: the recipe that trains them, the key they are saved under, the code that key hashes.

One module per chapter that trains something (``ch01`` SimCLR, ``ch02`` DINO, ``ch03`` MAE, ``ch04`` latent
diffusion, ``ch05`` FLAIR); :mod:`helpers.methods` keeps each method's loss, model, Callback and ``*_learner``, and
these modules put them together the way the chapter trains them. The notebooks and ``python -m helpers.pretrain``
call the same recipe, so a run trained in a shell is the run the chapter loads. Book page "Contributing" says what
an edit here touches.

Every run's key holds :func:`code` of its chapter module's ``CODE`` — the method's module, the encoder, the views,
the training loop and the recipe itself (:func:`helpers.runs.code_hash`, blind to docstrings and comments) — so an
edit to a loss, a model or a recipe trains the run again instead of reading back the run the old code made.

Chapters 3–6 measure against, or start from, the encoders of chapters 1, 2 and 5: each module's ``encoder(P, seed,
device)`` rebuilds that chapter's table and knobs and calls its recipe, so a cached run is read back in a second
(trained here only when that chapter never ran on this machine). ``P`` is the calling chapter's profile,
``data_seed`` its ``SEED`` (the tables' seed).
"""
from __future__ import annotations

import importlib

from .. import data, env, evaluation, models, profiles, runs, timings
from ..report import RunReport

PRETRAINING = {"simclr": "ch01", "dino": "ch02", "mae": "ch03"}  # python -m helpers.pretrain METHOD: the chapter


def recipe(method: str):
    """The chapter module whose recipe pretrains ``method`` (``"simclr"``, ``"dino"`` or ``"mae"``)."""
    if method not in PRETRAINING:
        raise ValueError(f"no pretraining recipe for {method!r}; there is one for {', '.join(PRETRAINING)}")
    return importlib.import_module(f"{__name__}.{PRETRAINING[method]}")


def code(parts) -> str:
    """The hash of the code in ``parts`` (a chapter module's ``CODE``), which every run key of that chapter holds."""
    return runs.code_hash(*parts)


def chapter_table(P, size: int, data_seed: int = 0, root=None, **options):
    """The book's table at ``size`` px, as every chapter loads it (extra SynthRetina ``options`` for chapter 5)."""
    return data.load(P.data.source, root=root, size=size, n_train=P.data.n_train, n_valid=P.data.n_valid,
                     n_test=P.data.n_test, seed=data_seed, **{**dict(P.data.options), **options})


def start(name: str, title: str, profile: str | None, seed: int, show=()):
    """Every chapter's first step: its profile (the knob groups in ``show`` printed), the device, the seeds, the
    run report it fills, and the time the chapter took when it was last measured. Returns ``(P, device, report)``."""
    P = profiles.load(profile)
    P.show(*show)
    device = env.get_device()
    print("device:", env.describe_device(device))
    env.seed_everything(seed)
    print(timings.measured(name))
    return P, device, RunReport(name, title, P, device)


def task_lists(table, tasks):
    """The protocol's ``tasks`` this table labels, the diagnoses among them (all but the camera site), and each
    task's chance accuracy: ``(TASKS, DIAGNOSES, CHANCE)`` as chapters 1–5 print them."""
    present = [t for t in tasks if t in table.labels.columns]
    return present, [t for t in present if t != "site_id"], {t: 1 / table.n_classes(t) for t in present}


def init_features(spec, inits, table, seeds, device=None, size=None) -> dict:
    """``{init: {seed: features}}`` of ``spec`` loaded with each pretrained initialisation in ``inits`` ("random" is
    left out: it differs per seed, so chapters 1 and 2 build it in their own loop); one set of weights, the same
    features for every seed. Chapters 1 and 2 compare their pretraining against these (e.g. ImageNet in ``gpu``)."""
    out = {}
    for init in inits:
        if init != "random":
            f = evaluation.extract_features(models.create_encoder(spec, init=init)[0], table, device=device, size=size)
            out[init] = dict.fromkeys(seeds, f)
    return out


def protocol_runner(table, knobs, tasks):
    """``run_protocol(name, by_seed, tasks=..., fractions=..., probes=...)``: the shared protocol (chapter 1
    explains it) on one encoder's features over seeds, on ``table`` with the profile's ``protocol`` knobs, cached
    under a hash of every feature value (:func:`helpers.evaluation.cached_protocol`). Chapters 1–3 call it."""
    def run_protocol(name, by_seed, tasks=tasks, fractions=knobs.fractions, probes=("linear", "knn")):
        return evaluation.cached_protocol(name, by_seed, table, knobs, tasks, fractions, probes)
    return run_protocol
