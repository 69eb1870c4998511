"""Chapter 3's runs ("MAE, as in RETFound"): MAE from a fresh ViT, saved and read back.

Chapter 3 trains the main runs and the mask-ratio sweep; chapter 6 reads the main runs back.
"""
from __future__ import annotations

from .. import data, env, models, runs
from ..methods import mae
from ..views import FundusViews
from . import code

CODE = ("helpers.methods.mae", "helpers.models:create_encoder", "helpers.models:small_vit", "helpers.views",
        "helpers.data:dataloaders", "helpers.runs:load_or_train", "helpers.chapters.ch03:pretrain")
KEY_KNOBS = ("encoder", "encoder_kwargs", "image_size", "batch_size", "lr", "decoder_dim", "decoder_depth",
             "decoder_heads", "norm_pix_loss", "wd")


def pretrain(table, knobs, seed: int, device, mask_ratio: float | None = None, epochs: int | None = None,
             tag: str = "main", save_at=(), loss_fn=None, bar: bool = True):
    """MAE from a fresh ViT, or the saved run read back: ``(model, history)``.

    ``knobs`` is a profile's ``mae`` group; ``mask_ratio``/``epochs`` override it (the mask-ratio sweep). The key
    holds every knob that shapes the run, so chapter 6 reads the same checkpoints back.
    """
    mask_ratio = knobs["mask_ratio"] if mask_ratio is None else mask_ratio
    epochs = knobs["epochs"] if epochs is None else epochs
    env.seed_everything(seed)
    enc, _ = models.create_encoder(knobs["encoder"], **knobs["encoder_kwargs"])
    dls = data.dataloaders(table, None, bs=knobs["batch_size"], size=knobs["image_size"], device=device,
                           augment=False, normalize=False, seed=seed)
    views = FundusViews(crop_scale=tuple(knobs["crop_scale"]), max_rotate=0, brightness=0, contrast=0, gain=0,
                        gamma=0, blur_p=0, noise=0)
    learn = mae.mae_learner(dls, enc, mask_ratio, knobs["decoder_dim"], knobs["decoder_depth"],
                            knobs["decoder_heads"], knobs["norm_pix_loss"], loss_fn=loss_fn, views=views,
                            wd=knobs["wd"])
    key = runs.run_key(chapter="03", tag=tag, seed=seed, mask_ratio=mask_ratio, epochs=epochs, views=repr(views),
                       knobs={k: knobs[k] for k in KEY_KNOBS}, data=table.fingerprint(), code=code(CODE))
    hist = runs.load_or_train(learn, key, epochs, knobs["lr"], name="mae", save_at=save_at, bar=bar)
    return learn.model, hist


def main_run(P, table, seed: int, device, epochs: int | None = None, bar: bool = True):
    """The chapter's main run for ``seed`` as chapter 3 trains it (``python -m helpers.pretrain mae``)."""
    return pretrain(table, P.mae, seed, device, epochs=epochs, save_at=P.mae.save_at, bar=bar)
