"""Chapter 4's generator at CPU scale: what the autoencoder keeps, and whether generated images carry their class.

For one configuration (image size, autoencoder widths and epochs, denoiser widths and epochs) it trains the KL
autoencoder and the class-conditional latent denoiser on SynthRetina, conditioned on glaucoma × AMD, then reports
the seconds each took, the reconstruction PSNR, a real-trained grader's balanced accuracy on real test images and
on their reconstructions (the ceiling), and on generated images at guidance 0 / 1 / 3. Run it alone: two trainings
at once on 2 cores slow each other several-fold.

    python tests/benchmarks/benchmark_diffusion.py --vae 16 32 32 --vae-epochs 10 --unet 32 64 --unet-epochs 60

The rows that chose the ``cpu`` knobs are in ``tests/benchmarks/results/diffusion.jsonl``: a 2× autoencoder
(16 × 16 latents) keeps more detail, but its denoiser costs 2.5× per step and 15 epochs of it sampled noise; with
4× (8 × 8 latents) and a 2-level UNet, 60 epochs at batch 128 make images whose AMD the grader recognises at
guidance 3. Glaucoma (a 1–2-px cup at 32 px) is lost by every autoencoder tried.
"""
from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch

from helpers import data, evaluation, transfer
from helpers.chapters import ch04
from helpers.methods import diffusion as D

COND = ("glaucoma", "amd")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--vae", type=int, nargs="+", default=[16, 32, 32])
    ap.add_argument("--latent-channels", type=int, default=4)
    ap.add_argument("--vae-epochs", type=int, default=10)
    ap.add_argument("--vae-bs", type=int, default=32)
    ap.add_argument("--vae-lr", type=float, default=3e-3)
    ap.add_argument("--kl", type=float, default=1e-6)
    ap.add_argument("--unet", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--unet-epochs", type=int, default=60)
    ap.add_argument("--unet-bs", type=int, default=128)
    ap.add_argument("--unet-lr", type=float, default=2e-3)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--per-class", type=int, default=64)
    ap.add_argument("--out", default="diffusion.jsonl")
    a = ap.parse_args()
    table = data.load("synthretina", size=a.size, n_train=2000, n_valid=500, n_test=500, seed=0, balanced=True,
                      progress=False)
    knobs = {"image_size": a.size, "vae_channels": a.vae, "latent_channels": a.latent_channels,
             "vae_epochs": a.vae_epochs, "vae_batch_size": a.vae_bs, "vae_lr": a.vae_lr, "kl_weight": a.kl,
             "unet_channels": a.unet, "unet_epochs": a.unet_epochs, "unet_batch_size": a.unet_bs,
             "unet_lr": a.unet_lr, "T": 1000, "schedule": "cosine", "p_uncond": 0.15, "ema": 0.995}
    grader = transfer.train_classifier(table, list(COND), epochs=10, lr=3e-3, size=a.size, device="cpu",
                                       name="grader")
    t0 = time.perf_counter()
    ae, vh = ch04.train_autoencoder(table, knobs, 0, "cpu", bar=False)
    vae_s = time.perf_counter() - t0
    imgs = {s: D.split_images(table, s, a.size) for s in ("train", "valid", "test")}
    z = {s: D.encode_images(ae, x) for s, x in imgs.items()}
    recon = D.decode_latents(ae, z["test"])
    te = table.split_index("test")

    def agreement(images, targets):
        ps = transfer.predict(grader, images, [2, 2])
        return {t: round(evaluation.metrics(np.asarray(targets[i]), p)["balanced_accuracy"], 3)
                for i, (t, p) in enumerate(zip(COND, ps))}

    truth = [table.target(t)[te] for t in COND]
    row = dict(knobs, vae_seconds=round(vae_s, 1), latent_shape=list(z["train"].shape[1:]),
               psnr=round(10 * math.log10(1 / float(((recon - imgs["test"]) ** 2).mean())), 1),
               grader_real=agreement(imgs["test"], truth), grader_reconstructions=agreement(recon, truth))
    print(f"autoencoder {vae_s:.0f} s, latents {row['latent_shape']}, PSNR {row['psnr']} dB; grader on real "
          f"{row['grader_real']}, on reconstructions {row['grader_reconstructions']}", flush=True)
    lab = {s: torch.from_numpy(2 * table.target("glaucoma")[table.split_index(s)]
                               + table.target("amd")[table.split_index(s)]) for s in ("train", "valid")}
    scale = vh["latent_scale"]
    t0 = time.perf_counter()
    den, _ = ch04.train_denoiser({s: z[s] * scale for s in ("train", "valid")}, lab, 4, knobs, 0, "cpu",
                              source=vh["key"], bar=False)
    row["unet_seconds"] = round(time.perf_counter() - t0, 1)
    y = torch.arange(4).repeat_interleave(a.per_class)
    row["grader_generated"] = {}
    for s in (0.0, 1.0, 3.0):
        lat = D.sample(den.sampler(), y, den.abar, z["train"].shape[1:], steps=a.steps, guidance=s,
                       generator=torch.Generator().manual_seed(0))
        row["grader_generated"][str(s)] = agreement(D.decode_latents(ae, lat / scale),
                                                    [(y // 2).numpy(), (y % 2).numpy()])
    print(f"denoiser {row['unet_seconds']} s; grader on generated (guidance 0/1/3) {row['grader_generated']}",
          flush=True)
    with open(a.out, "a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
