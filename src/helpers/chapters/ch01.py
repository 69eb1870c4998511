"""Chapter 1's runs ("SimCLR on fundus photographs"): SimCLR from a fresh encoder, saved and read back.

Chapter 1 trains them (its exercise's loss once solved); chapters 2–6 read the same runs back — for their
comparison tables, the Fréchet features of chapter 4, the start of chapter 5's FLAIR, chapter 6's transfer study.
"""
from __future__ import annotations

from .. import data, env, models, runs
from ..methods import simclr
from ..views import FundusViews
from . import chapter_table, code

CODE = ("helpers.methods.simclr", "helpers.models:create_encoder", "helpers.models:SmallCNN", "helpers.models:MLPHead",
        "helpers.views", "helpers.data:dataloaders", "helpers.runs:load_or_train", "helpers.chapters.ch01:pretrain")
KEY_KNOBS = ("encoder", "image_size", "batch_size", "lr", "proj_dim")


def key(table, knobs, seed: int, temperature: float, epochs: int, views, tag: str = "main") -> str:
    """The key a SimCLR run is saved under: its knobs, views, data and the hash of the code in ``CODE``."""
    return runs.run_key(chapter="01", tag=tag, seed=seed, temperature=temperature, epochs=epochs, views=repr(views),
                        knobs={k: knobs[k] for k in KEY_KNOBS}, data=table.fingerprint(), code=code(CODE))


def pretrain(table, knobs, seed: int, device, views=None, temperature: float | None = None, epochs: int | None = None,
             tag: str = "main", save_at=(), loss_fn=None, bar: bool = True):
    """SimCLR from a fresh encoder, or the saved run read back: ``(model, history)``.

    ``knobs`` is a profile's ``simclr`` group; ``views``/``temperature``/``epochs`` override it (chapter 1's
    ablations). ``loss_fn`` is the student's NT-Xent once chapter 1's check has found it equal to the library's, so
    it does not change the key.
    """
    views = views or FundusViews()
    temperature = knobs["temperature"] if temperature is None else temperature
    epochs = knobs["epochs"] if epochs is None else epochs
    env.seed_everything(seed)
    enc, _ = models.create_encoder(knobs["encoder"])
    dls = data.dataloaders(table, None, bs=knobs["batch_size"], size=knobs["image_size"], device=device,
                           augment=False, normalize=False, seed=seed)
    learn = simclr.simclr_learner(dls, enc, proj_dim=knobs["proj_dim"], temperature=temperature, views=views,
                                  loss_fn=loss_fn)
    hist = runs.load_or_train(learn, key(table, knobs, seed, temperature, epochs, views, tag), epochs, knobs["lr"],
                              name="simclr", save_at=save_at, bar=bar)
    return learn.model, hist


def main_run(P, table, seed: int, device, epochs: int | None = None, bar: bool = True):
    """The chapter's main run for ``seed`` as chapter 1 trains it (``python -m helpers.pretrain simclr``)."""
    return pretrain(table, P.simclr, seed, device, epochs=epochs, save_at=P.simclr.save_at, bar=bar)


def encoder(P, seed: int, device, data_seed: int = 0, root=None):
    """Chapter 1's SimCLR encoder for ``seed``, read back (trained only if chapter 1 never ran here)."""
    model, _ = main_run(P, chapter_table(P, P.simclr.image_size, data_seed, root), seed, device, bar=False)
    return model.encoder.eval()
