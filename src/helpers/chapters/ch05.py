"""Chapter 5's runs ("FLAIR zero-shot"): a mini-FLAIR trained on SynthRetina's images and reports.

Chapter 5 trains it from the encoder its profile names (chapter 1's SimCLR encoder in ``cpu``); chapter 6 reads
its image tower back as the domain-initialised encoder.
"""
from __future__ import annotations

import copy

import numpy as np
from tokenizers import Tokenizer

from .. import data, env, models, runs
from ..methods import flair
from . import ch01, chapter_table, code

CODE = ("helpers.methods.flair", "helpers.models:create_encoder", "helpers.models:SmallCNN", "helpers.views",
        "helpers.data:dataloaders", "helpers.runs:load_or_train", "helpers.chapters.ch05:train_mini")
KEY_KNOBS = ("encoder", "image_size", "batch_size", "lr", "epochs", "vocab_size", "max_length", "text_hidden",
             "text_layers", "text_heads", "proj_dim")


def train_mini(table, knobs, seed: int, device, init=None, init_name: str = "random", loss_fn=None,
               bar: bool = True):
    """A mini-FLAIR on ``table``'s training images and their reports (impressions stripped), or the saved run read
    back: ``(model, tokenizer, history)``. The tokenizer is built from the training text and saved with the run.
    ``init`` is an optional vision encoder to start from (``init_name`` keys it); ``loss_fn`` is the student's loss
    once chapter 5's check has found it equal to :func:`helpers.methods.flair.flair_loss` (so it does not change
    the key)."""
    env.seed_everything(seed)
    texts = [flair.strip_impression(r) for r in table.labels["report"]]
    train = table.split_index("train")
    tok = flair.build_tokenizer([texts[i] for i in train], knobs["vocab_size"])
    ids, mask = flair.encode(tok, texts, knobs["max_length"])
    rows = table.labels.assign(row=np.arange(len(table)))
    t2 = type(table)(table.images, rows, dict(table.tasks, row="single"), dict(table.classes), table.name, table.root)
    dls = data.dataloaders(t2, "row", bs=knobs["batch_size"], size=knobs["image_size"], device=device, augment=True,
                           seed=seed)
    enc = copy.deepcopy(init) if init is not None else models.create_encoder(knobs["encoder"])[0]
    text = flair.mini_text_model(tok.get_vocab_size(), knobs["text_hidden"], knobs["text_layers"],
                                 knobs["text_heads"], knobs["max_length"], knobs["proj_dim"])
    learn = flair.flair_learner(dls, enc, text, ids, mask, flair.report_categories(table), knobs["proj_dim"],
                                loss_fn=loss_fn)
    key = runs.run_key(chapter="05", seed=seed, init=init_name, init_weights=runs.weights_fingerprint(learn.model),
                       knobs={k: knobs[k] for k in KEY_KNOBS}, data=table.fingerprint(), code=code(CODE))
    keep = lambda _: {"tokenizer": tok.to_str()}  # noqa: E731  (saved with the run)
    hist = runs.load_or_train(learn, key, knobs["epochs"], knobs["lr"], name="flair", extra=keep, bar=bar)
    return learn.model.eval(), Tokenizer.from_str(hist["tokenizer"]), hist


def encoder(P, seed: int, device, data_seed: int = 0, root=None):
    """Chapter 5's mini-FLAIR image tower for ``seed`` (before its projection), read back."""
    K = P.flair
    t = chapter_table(P, K.image_size, data_seed, root, site_correlation=K.site_correlation)
    init = ch01.encoder(P, seed, device, data_seed, root) if K.init == "simclr" else None
    model, _, _ = train_mini(t, K, seed, device, init=init, init_name=K.init, bar=False)
    return model.vision_model.model.eval()
