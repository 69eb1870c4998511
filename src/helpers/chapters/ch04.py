"""Chapter 4's runs ("Latent diffusion, as in DERETFound"): the KL autoencoder and the class-conditional denoiser.

Both are trained once and read back; the denoiser's key holds the autoencoder's (``source``), so another
autoencoder or labelling is another run.
"""
from __future__ import annotations

from fastai.data.core import DataLoaders
from torch.utils.data import TensorDataset

from .. import data, env, runs
from ..methods import diffusion
from . import code

CODE = ("helpers.methods.diffusion", "helpers.data:dataloaders", "helpers.runs:EMA", "helpers.runs:ema_update",
        "helpers.runs:cosine_momentum", "helpers.runs:load_or_train", "helpers.chapters.ch04")
VAE_KNOBS = ("image_size", "vae_channels", "latent_channels", "vae_epochs", "vae_batch_size", "vae_lr", "kl_weight")
UNET_KNOBS = ("unet_channels", "unet_epochs", "unet_batch_size", "unet_lr", "T", "schedule", "p_uncond", "ema")


def train_autoencoder(table, knobs, seed: int, device, bar: bool = True):
    """The KL autoencoder on the training images, or the saved one read back: ``(model, history)``.

    ``history["latent_scale"]`` is 1 / std of the training latents, computed after training and stored in the
    checkpoint's metadata, so a reloaded autoencoder comes with the scale its denoiser was trained with.
    """
    env.seed_everything(seed)
    dls = data.dataloaders(table, None, bs=knobs["vae_batch_size"], size=knobs["image_size"], device=device,
                           augment=False, normalize=False, seed=seed)
    vae = diffusion.autoencoder(knobs["vae_channels"], knobs["latent_channels"],
                                norm_groups=min(16, min(knobs["vae_channels"])))
    learn = diffusion.vae_learner(dls, vae, knobs["kl_weight"])
    key = runs.run_key(chapter="04", part="vae", seed=seed, knobs={k: knobs[k] for k in VAE_KNOBS},
                       init=runs.weights_fingerprint(learn.model), data=table.fingerprint(), code=code(CODE))
    train = lambda l: {"latent_scale": diffusion.latent_scale(diffusion.encode_images(  # noqa: E731
        l.model, diffusion.split_images(table, "train", knobs["image_size"]), device=device))}
    hist = runs.load_or_train(learn, key, knobs["vae_epochs"], knobs["vae_lr"], name="vae", extra=train, bar=bar)
    return learn.model.eval(), {**hist, "key": key}


def train_denoiser(latents: dict, labels: dict, n_classes: int, knobs, seed: int, device, source: str,
                   bar: bool = True):
    """The class-conditional denoiser on scaled latents, or the saved one read back: ``(model, history)``.

    ``latents``/``labels``: ``{"train": …, "valid": …}`` tensors; ``source`` names what made the latents (the
    autoencoder's run key and the labels), so another autoencoder or labelling is another run.
    """
    env.seed_everything(seed)
    dsets = [TensorDataset(latents[s].float(), labels[s].long()) for s in ("train", "valid")]
    dls = DataLoaders.from_dsets(*dsets, bs=knobs["unet_batch_size"], device=device, num_workers=0)
    for dl in dls.loaders:
        dl.rng.seed(seed)
    shape = latents["train"].shape[1:]
    learn = diffusion.diffusion_learner(dls, diffusion.unet(shape[-1], shape[0], n_classes, knobs["unet_channels"]),
                                        n_classes, knobs["T"], knobs["schedule"], knobs["p_uncond"], knobs["ema"])
    key = runs.run_key(chapter="04", part="unet", seed=seed, n_classes=n_classes, source=source,
                       knobs={k: knobs[k] for k in UNET_KNOBS}, init=runs.weights_fingerprint(learn.model),
                       code=code(CODE))
    hist = runs.load_or_train(learn, key, knobs["unet_epochs"], knobs["unet_lr"], name="denoiser", bar=bar)
    learn.model.abar = learn.abar
    return learn.model.eval(), hist
