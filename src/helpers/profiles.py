"""Profiles: one name sets every knob a chapter uses.

Explained on the book page "How to run this book" (book/how-to-run.md) and used
by the parameters cell of every chapter::

    P = helpers.profiles.load(PROFILE)   # "smoke", "cpu", "gpu", "full" or "auto"
    P.show("simclr", "protocol")          # print the knobs this run uses

A chapter never branches on anything but these knobs. ``auto`` resolves to
``gpu`` when CUDA is available and to ``cpu`` otherwise. ``load(None)`` reads
the environment variable ``RETINA_PROFILE`` and falls back to ``auto``.

Knob groups: ``data`` (shared by every chapter unless a chapter overrides it),
``protocol`` (the shared evaluation protocol: tasks, label fractions, probes,
fine-tuning), then one group per chapter, named after its subject or method
(``synthretina`` for chapter 0, ``simclr``, ...). Image sizes live in the
chapter's group.
"""
from __future__ import annotations

import copy
import json
import os

import torch

from .knobs import Knobs, MissingKnob, Profile  # noqa: F401  (MissingKnob: what a missing knob raises)

PROFILE_NAMES = ("smoke", "cpu", "gpu", "full")
VALID_NAMES = PROFILE_NAMES + ("rehearsal", "reference", "auto")
ENV_VAR = "RETINA_PROFILE"
ARCH_ENV = "RETINA_ARCHITECTURES"  # the loaded profile's `architectures`, as JSON (child processes inherit it)


_COMMON = {
    # SynthRetina, the embedded world (see chapter 0).
    "embedded": {
        "world": "embedded",
        "pretrained": False,
        "data": {"source": "synthretina", "num_workers": 0, "options": {"balanced": True}},
    },
    # Real open data and official weights (needs internet the first time).
    "real": {
        "world": "real",
        "pretrained": True,
        # downloaded (with a progress bar, checksum and cache) the first time a chapter asks for it
        "data": {"source": "retinamnist", "num_workers": 2, "options": {"download_missing": True}},
    },
}


def _merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


_TASKS = ["dr_grade", "hr_grade", "glaucoma", "amd", "site_id"]  # SynthRetina: four diagnoses and the nuisance

_DINO_VIT_S16 = {  # chapter 2 on real data (gpu); full scales it up
    "encoder": "vit_small_patch16_224", "encoder_kwargs": {"dynamic_img_size": True}, "image_size": 224,
    "epochs": 30, "batch_size": 64, "lr": 5e-4, "momentum": 0.996, "teacher_horizon": 0.1, "out_dim": 4096, "hidden_dim": 2048,
    "bottleneck_dim": 256, "norm_last_layer": True, "n_local": 6, "global_scale": [0.4, 1.0],
    "local_scale": [0.05, 0.4], "local_size": 96, "t_student": 0.1, "t_teacher": 0.07,
    "warmup_t_teacher": 0.04, "warmup_epochs": 10, "center_momentum": 0.9, "wd": 0.04, "seeds": [0, 1, 2],
    "save_at": [10, 20, 30], "ablation_epochs": 5, "monitor_task": "dr_grade", "monitor_size": 300,
    "attention_encoder": "vit_small_patch16_224", "attention_kwargs": {"dynamic_img_size": True},
    "attention_epochs": 30, "attention_local_size": 96, "attention_save_at": [10, 20, 30],
    "attention_images": 200, "compare_inits": ["random", "dino-vit-s16"]}

_EFFICIENCY = [  # chapter 3's efficiency table: RETFound beside RETFound-Green, random init outside gpu/full
    {"label": "RETFound (ViT-L/16, MAE)", "arch": "vit_large_patch16_224", "kwargs": {}, "size": 224,
     "init": "random"},
    {"label": "RETFound-Green (ViT-S/14 + 4 registers)", "arch": "vit_small_patch14_reg4_dinov2",
     "kwargs": {"img_size": 392}, "size": 392, "init": "random"}]

_MAE_VIT_S16 = {  # chapter 3 on real data (gpu); full scales it to RETFound's ViT-L/16
    "encoder": "vit_small_patch16_224", "encoder_kwargs": {"global_pool": "avg"}, "image_size": 224, "epochs": 50,
    "batch_size": 128, "lr": 1e-3, "mask_ratio": 0.75, "decoder_dim": 256, "decoder_depth": 4, "decoder_heads": 8,
    "norm_pix_loss": True, "wd": 0.05, "crop_scale": [0.2, 1.0], "seeds": [0, 1, 2], "save_at": [10, 25, 50],
    "sweep_ratios": [0.5, 0.9], "sweep_seeds": [0], "sweep_epochs": 25, "sweep_finetune": True,
    "finetune_fractions": [0.01, 0.1, 1.0], "finetune_epochs": 10,
    "finetune_lr": 5e-4, "layer_decay": 0.65, "label_smoothing": 0.1, "warmup": 0.2, "finetune_wd": 0.05,
    "finetune_min_steps": 100, "recon_images": 4, "compare_inits": ["retfound-mae", "retfound-green"],
    "efficiency_models": [dict(m, init=w) for m, w in zip(_EFFICIENCY, ("retfound-mae", "retfound-green"))],
    "efficiency_images": 64, "efficiency_batch": 32}

_DIFFUSION_GPU = {  # chapter 4 on real data (gpu, 128 px, conditioned on the DR grade); not yet run on a GPU
    "image_size": 128, "condition": ["dr_grade"], "vae_channels": [64, 128, 128, 128], "latent_channels": 4,
    "vae_epochs": 20, "vae_batch_size": 32, "vae_lr": 1e-3, "kl_weight": 1e-6, "unet_channels": [64, 128, 256],
    "unet_epochs": 100, "unet_batch_size": 64, "unet_lr": 2e-4, "T": 1000, "schedule": "cosine", "p_uncond": 0.15,
    "ema": 0.999, "sample_steps": 50, "ddpm_steps": 1000, "guidance": 3.0, "fd_guidance": 1.3, "guidance_sweep": [0.0, 1.0, 1.3, 3.0],
    "n_per_class": 100, "grader_epochs": 10, "grader_lr": 1e-3, "real_counts": [300, 1080], "n_synthetic": 2000,
    "ssl_steps": 1000, "seeds": [0, 1, 2], "released_generator": None}

_FLAIR_REAL = {  # chapter 5 with FLAIR's released model on a real DR-graded set (gpu/full); not yet run on a GPU
    "mini": False, "official": True, "image_size": 512, "encoder": "resnet50", "init": "flair", "site_correlation": 0.0,
    "batch_size": 32, "lr": 1e-4, "epochs": 0, "vocab_size": 0, "max_length": 77, "text_hidden": 768,
    "text_layers": 12, "text_heads": 12, "proj_dim": 512, "seeds": [0, 1, 2], "tasks": ["dr_grade"], "shots": [1, 5, 10],
    "camera_swap": False,
    "dictionary_url": "https://raw.githubusercontent.com/jusiro/FLAIR/main/flair/modeling/dictionary.py",
    "similarity_images": 12}

_TRANSFER_REAL = {  # chapter 6 on a real binary task (gpu/full): "any DR" on RetinaMNIST, a plainly named substitute
    # for the seed study's CGI-HRDC (registration needed); no sites, so in distribution only; not yet run on a GPU
    "image_size": 224, "arch": "resnet50", "binary": {"dr_any": "dr_grade"}, "tasks": ["dr_any", "dr_grade"],
    "inits": ["random", "imagenet", "flair-resnet50"], "domain_init": "flair-resnet50", "epochs": 10, "lr": 1e-3,
    "lr_mult": 10, "batch_size": 32, "balanced": True, "seeds": [0, 1, 2], "train_sites": None, "ood_site": None,
    "strong_shift": None}

_PROFILES: dict[str, dict] = {
    "smoke": _merge(_COMMON["embedded"], {
        "about": "tests and CI: tiny SynthRetina, random init; <= 60 s per chapter on 2 CPU cores",
        "data": {"n_train": 192, "n_valid": 96, "n_test": 96, "batch_size": 32},
        "synthretina": {"gallery_size": 64, "epochs": 2, "lr": 3e-3, "n_train": 256, "image_size": 32,
                        "cache": False},
        "simclr": {"encoder": "small_cnn_narrow", "image_size": 32, "epochs": 2, "batch_size": 32, "lr": 3e-3,
                   "proj_dim": 32, "temperature": 0.2, "seeds": [0, 1], "save_at": [1, 2],
                   "sweep_temperatures": [0.1, 0.5], "compare_inits": ["random"]},
        "dino": {"encoder": "small_cnn_narrow", "encoder_kwargs": {}, "image_size": 32, "epochs": 2, "batch_size": 32,
                 "lr": 1e-3, "momentum": 0.996, "teacher_horizon": 0.1, "out_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16,
                 "norm_last_layer": True, "n_local": 2, "global_scale": [0.5, 1.0], "local_scale": [0.05, 0.25],
                 "local_size": None, "t_student": 0.1, "t_teacher": 0.04, "warmup_t_teacher": 0.04, "warmup_epochs": 0,
                 "center_momentum": 0.9, "wd": 0.04, "seeds": [0, 1], "save_at": [1, 2], "ablation_epochs": 1,
                 "monitor_task": "amd", "monitor_size": 48, "attention_encoder": "small_vit",
                 "attention_kwargs": {"img_size": 32, "patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2},
                 "attention_epochs": 1, "attention_local_size": 16, "attention_save_at": [1], "attention_images": 16,
                 "compare_inits": ["random"]},
        "mae": {"encoder": "small_vit", "encoder_kwargs": {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2,
                                                           "num_heads": 2, "global_pool": "avg"},
                "image_size": 32, "epochs": 2, "batch_size": 32, "lr": 2e-3, "mask_ratio": 0.75, "decoder_dim": 32,
                "decoder_depth": 1, "decoder_heads": 2, "norm_pix_loss": False, "wd": 0.05, "crop_scale": [0.5, 1.0],
                "seeds": [0, 1], "save_at": [1, 2], "sweep_ratios": [0.5], "sweep_seeds": [0],
                "sweep_epochs": 1, "sweep_finetune": True,
                "finetune_fractions": [1.0], "finetune_epochs": 1, "finetune_lr": 2e-3, "layer_decay": 0.75,
                "label_smoothing": 0.1, "warmup": 0.2, "finetune_wd": 0.05, "finetune_min_steps": 4, "recon_images": 3,
                "compare_inits": ["random"],
                "efficiency_models": [dict(m, kwargs={**m["kwargs"], "img_size": 32}, size=32) for m in _EFFICIENCY],
                "efficiency_images": 2, "efficiency_batch": 2},
        "diffusion": {"image_size": 32, "condition": ["glaucoma", "amd"], "vae_channels": [16, 16, 16],
                      "latent_channels": 4, "vae_epochs": 1, "vae_batch_size": 32, "vae_lr": 3e-3, "kl_weight": 1e-6,
                      "unet_channels": [16, 32], "unet_epochs": 2, "unet_batch_size": 32, "unet_lr": 2e-3, "T": 1000,
                      "schedule": "cosine", "p_uncond": 0.15, "ema": 0.9, "sample_steps": 5, "ddpm_steps": 10,
                      "guidance": 3.0, "fd_guidance": 1.3, "guidance_sweep": [0.0, 1.0, 1.3, 3.0], "n_per_class": 40, "grader_epochs": 1,
                      "grader_lr": 3e-3, "real_counts": [64, 192], "n_synthetic": 32, "ssl_steps": 4, "seeds": [0, 1],
                      "released_generator": None},
        "flair": {"mini": True, "official": False, "image_size": 32, "encoder": "small_cnn_narrow", "init": "random",
                  "site_correlation": 0.7, "batch_size": 32, "lr": 3e-3, "epochs": 2, "vocab_size": 200,
                  "max_length": 48, "text_hidden": 32, "text_layers": 2, "text_heads": 2, "proj_dim": 32,
                  "seeds": [0, 1], "tasks": ["dr_grade", "hr_grade", "glaucoma", "amd"], "shots": [1, 5],
                  "camera_swap": True, "dictionary_url": None, "similarity_images": 8},
        "transfer": {"image_size": 32, "arch": "small_cnn_narrow", "binary": {"hr_any": "hr_grade"},
                     "tasks": ["hr_any", "hr_grade", "dr_grade"], "inits": ["random", "simclr"], "domain_init": "simclr",
                     "epochs": 1, "lr": 3e-3, "lr_mult": 10, "batch_size": 32, "balanced": True, "seeds": [0, 1],
                     "train_sites": ["site-A", "site-B"], "ood_site": "site-C", "strong_shift": {"name": "site-D (stronger shift)", "cast": [0.78, 1.05, 1.28], "vignetting": 0.55, "blur": 1.3, "noise": 0.045, "gamma": 0.8}},
        "protocol": {"tasks": _TASKS, "fractions": [0.1, 1.0], "max_iter": 200, "knn_k": 5, "embedding": "pca",
                     "finetune_epochs": 1, "finetune_freeze_epochs": 1, "finetune_min_steps": 4, "finetune_lr": 1e-2,
                     "finetune_lr_mult": 3},
    }),
    "cpu": _merge(_COMMON["embedded"], {
        "about": "a laptop or a first `make book`: SynthRetina sized so each claim shows; each chapter prints its measured time",
        "data": {"n_train": 2000, "n_valid": 500, "n_test": 500, "batch_size": 64},
        "synthretina": {"gallery_size": 128, "epochs": 8, "lr": 3e-3, "n_train": 3000, "image_size": 64,
                        "cache": True},
        # knobs from tests/benchmarks/benchmark_ssl_gain.py: the narrow CNN gains the most per CPU-minute
        "simclr": {"encoder": "small_cnn_narrow", "image_size": 48, "epochs": 30, "batch_size": 128, "lr": 3e-3,
                   "proj_dim": 64, "temperature": 0.2, "seeds": [0, 1, 2], "save_at": [5, 10, 20, 30],
                   "sweep_temperatures": [0.1, 0.5], "compare_inits": ["random"]},
        # knobs from tests/benchmarks/benchmark_ssl_gain.py --method dino and the attention runs (see chapter 2)
        "dino": {"encoder": "small_cnn_narrow", "encoder_kwargs": {}, "image_size": 48, "epochs": 20,
                 "batch_size": 128, "lr": 1e-3, "momentum": 0.996, "teacher_horizon": 0.1, "out_dim": 1024, "hidden_dim": 256,
                 "bottleneck_dim": 64, "norm_last_layer": True, "n_local": 4, "global_scale": [0.5, 1.0],
                 "local_scale": [0.05, 0.25], "local_size": None, "t_student": 0.1, "t_teacher": 0.04,
                 "warmup_t_teacher": 0.04, "warmup_epochs": 0, "center_momentum": 0.9, "wd": 0.04, "seeds": [0, 1, 2],
                 "save_at": [5, 10, 20], "ablation_epochs": 5, "monitor_task": "amd", "monitor_size": 300,
                 "attention_encoder": "small_vit",
                 "attention_kwargs": {"img_size": 48, "patch_size": 8, "embed_dim": 64, "depth": 3, "num_heads": 2},
                 "attention_epochs": 10, "attention_local_size": 24, "attention_save_at": [2, 5, 10],
                 "attention_images": 200, "compare_inits": ["random"]},
        # knobs from tests/benchmarks/benchmark_mae.py (results/mae.jsonl); the ViT is chapter 2's attention ViT
        "mae": {"encoder": "small_vit", "encoder_kwargs": {"img_size": 48, "patch_size": 8, "embed_dim": 64, "depth": 3,
                                                           "num_heads": 2, "global_pool": "avg"},
                "image_size": 48, "epochs": 60, "batch_size": 128, "lr": 2e-3, "mask_ratio": 0.75, "decoder_dim": 32,
                "decoder_depth": 2, "decoder_heads": 2, "norm_pix_loss": False, "wd": 0.05, "crop_scale": [0.5, 1.0],
                "seeds": [0, 1, 2], "save_at": [5, 20, 60], "sweep_ratios": [0.5, 0.9], "sweep_seeds": [0],
                "sweep_epochs": 15, "sweep_finetune": False,
                "finetune_fractions": [0.1, 1.0], "finetune_epochs": 20, "finetune_lr": 3e-3, "layer_decay": 0.65,
                "label_smoothing": 0.1, "warmup": 0.2, "finetune_wd": 0.05, "finetune_min_steps": 150,
                "recon_images": 4, "compare_inits": ["random"], "efficiency_models": _EFFICIENCY,
                "efficiency_images": 4, "efficiency_batch": 4},
        "flair": {"mini": True, "official": False, "image_size": 48, "encoder": "small_cnn_narrow", "init": "simclr",
                  "site_correlation": 0.7, "batch_size": 128, "lr": 2e-3, "epochs": 25, "vocab_size": 400,
                  "max_length": 64, "text_hidden": 64, "text_layers": 2, "text_heads": 2, "proj_dim": 64,
                  "seeds": [0, 1, 2], "tasks": ["dr_grade", "hr_grade", "glaucoma", "amd"], "shots": [1, 5, 10],
                  "camera_swap": True, "dictionary_url": None, "similarity_images": 12},
        "transfer": {"image_size": 48, "arch": "small_cnn_narrow", "binary": {"hr_any": "hr_grade"},
                     "tasks": ["hr_any", "hr_grade", "dr_grade"], "inits": ["random", "simclr", "dino", "flair"],
                     "domain_init": "flair", "epochs": 10, "lr": 3e-3, "lr_mult": 10, "batch_size": 64,
                     "balanced": True, "seeds": [0, 1, 2], "train_sites": ["site-A", "site-B"], "ood_site": "site-C",
                     "strong_shift": {"name": "site-D (stronger shift)", "cast": [0.78, 1.05, 1.28], "vignetting": 0.55, "blur": 1.3, "noise": 0.045, "gamma": 0.8}},
        # knobs from the prototype runs in the chapter 4 section of tests/benchmarks/results/diffusion.jsonl
        # latent_channels 4, as Stable Diffusion. Tried 16 (SD3's choice) on 2026-12-07 since the reconstructions of
        # real eyes lose the optic cup (glaucoma grader 0.54 on them vs 0.92 on the originals): 16 kept no more of it
        # (0.54) and the samples got worse (AMD grader 0.59 vs 0.91, guidance no longer moved the distance).
        # Measured again on 2026-12-07 (reconstructions of the test eyes, glaucoma grader; originals 0.94): vae_channels
        # [16, 32] (a 16x16 latent) 0.52, [32, 64] 0.61; L1 loss 0.50; MSE + Laplacian term 0.52; vae_epochs 30 0.65
        # (+85 s). The grader itself falls to 0.59 on originals blurred by sigma 0.8 px, and a grader trained on
        # half-blurred eyes still reads them (0.89) but not the reconstructions (0.56): the cup is single-pixel
        # detail that the short autoencoder training has not learnt yet (chapter 4's blur figure).
        "diffusion": {"image_size": 32, "condition": ["glaucoma", "amd"], "vae_channels": [16, 32, 32],
                      "latent_channels": 4, "vae_epochs": 10, "vae_batch_size": 32, "vae_lr": 3e-3, "kl_weight": 1e-6,
                      "unet_channels": [32, 64], "unet_epochs": 60, "unet_batch_size": 128, "unet_lr": 2e-3, "T": 1000,
                      "schedule": "cosine", "p_uncond": 0.15, "ema": 0.995, "sample_steps": 25, "ddpm_steps": 250,
                      "guidance": 3.0, "fd_guidance": 1.3, "guidance_sweep": [0.0, 1.0, 1.3, 3.0], "n_per_class": 64, "grader_epochs": 10,
                      "grader_lr": 3e-3, "real_counts": [500, 2000], "n_synthetic": 1000, "ssl_steps": 150,
                      "seeds": [0, 1, 2], "released_generator": None},
        "protocol": {"tasks": _TASKS, "fractions": [0.01, 0.1, 1.0], "max_iter": 1000, "knn_k": 10,
                     "embedding": "tsne", "finetune_epochs": 10, "finetune_freeze_epochs": 1, "finetune_min_steps": 150,
                     "finetune_lr": 1e-2, "finetune_lr_mult": 3},
    }),
    "gpu": _merge(_COMMON["real"], {
        "about": "Colab T4 (16 GB): real open datasets and official weights (budget: How to run; not yet timed on a GPU)",
        "data": {"n_train": None, "n_valid": None, "n_test": None, "batch_size": 64},
        "synthretina": {"gallery_size": 128, "epochs": 8, "lr": 3e-3, "n_train": 5000, "image_size": 128,
                        "cache": True},
        # batch 96: two 224-px views of 128 images keep 16.5 GB of fp16 activations, over a T4's 16 GB
        # (tools/flop_budget.py); 2 x 96 keep 12.4 GB
        "simclr": {"encoder": "resnet50", "image_size": 224, "epochs": 20, "batch_size": 96, "lr": 1e-3,
                   "proj_dim": 128, "temperature": 0.1, "seeds": [0, 1, 2], "save_at": [5, 10, 20],
                   "sweep_temperatures": [0.05, 0.5], "compare_inits": ["random", "imagenet"]},
        "dino": _DINO_VIT_S16,
        "mae": _MAE_VIT_S16,
        "diffusion": _DIFFUSION_GPU,
        "flair": _FLAIR_REAL,
        "transfer": _TRANSFER_REAL,
        "protocol": {"tasks": ["dr_grade"], "fractions": [0.01, 0.1, 1.0], "max_iter": 2000, "knn_k": 20,
                     "embedding": "tsne", "finetune_epochs": 5, "finetune_freeze_epochs": 1, "finetune_min_steps": 100,
                     "finetune_lr": 1e-3, "finetune_lr_mult": 10},
    }),
    "full": _merge(_COMMON["real"], {
        "about": "large GPUs: the papers' settings",
        "data": {"source": "deepdrid", "n_train": None, "n_valid": None,
                 "n_test": None, "batch_size": 256, "num_workers": 8},
        "synthretina": {"gallery_size": 256, "epochs": 10, "lr": 3e-3, "n_train": 20000, "image_size": 256,
                        "cache": True},
        "simclr": {"encoder": "resnet50", "image_size": 224, "epochs": 200, "batch_size": 256, "lr": 3e-4,
                   "proj_dim": 128, "temperature": 0.1, "seeds": [0, 1, 2], "save_at": [25, 50, 100, 200],
                   "sweep_temperatures": [0.05, 0.2, 0.5, 1.0],
                   "compare_inits": ["random", "imagenet"]},
        "dino": _merge(_DINO_VIT_S16, {"epochs": 100, "batch_size": 256, "out_dim": 65536, "n_local": 10,
                                       "warmup_epochs": 30, "save_at": [25, 50, 100], "ablation_epochs": 10,
                                       "monitor_size": 1000, "attention_epochs": 100,
                                       "attention_save_at": [25, 50, 100], "attention_images": 500}),
        "mae": _merge(_MAE_VIT_S16, {"encoder": "vit_large_patch16_224", "epochs": 200, "batch_size": 256,
                                     "lr": 1.5e-3, "decoder_dim": 512, "decoder_depth": 8, "decoder_heads": 16,
                                     "save_at": [50, 100, 200], "sweep_epochs": 100, "finetune_epochs": 50,
                                     "efficiency_images": 256, "efficiency_batch": 64}),
        "flair": _FLAIR_REAL,
        "transfer": _merge(_TRANSFER_REAL, {"epochs": 30, "seeds": [0, 1, 2, 3, 4]}),
        "diffusion": _merge(_DIFFUSION_GPU, {"unet_epochs": 400, "n_synthetic": 20000, "n_per_class": 500,
                                             "released_generator": "deretfound"}),
        "protocol": {"tasks": ["dr_grade"], "fractions": [0.01, 0.1, 1.0], "max_iter": 5000, "knn_k": 20,
                     "embedding": "tsne", "finetune_epochs": 20, "finetune_freeze_epochs": 1, "finetune_min_steps": 500,
                     "finetune_lr": 1e-3, "finetune_lr_mult": 10},
    }),
}


# The rehearsal (issue 25's "real path"): the gpu profile's own knobs, code path and sources, with only sizes changed
# so that every chapter runs on 2 CPU cores in the tests against local copies of the real hubs (tools/fixture_hub.py).
# Architectures keep their names (so official weights resolve and load through the same code) and are shrunk through
# `architectures` (timm / torchvision / transformers keyword overrides, read by helpers.models and helpers.weights).
_TINY_VIT = {"depth": 1, "embed_dim": 24, "num_heads": 2}
_REHEARSAL_ARCHS = {
    "resnet50": {"layers": [1, 1, 1, 1], "base_width": 8},  # the same shapes as torchvision-resnet50 below
    "torchvision-resnet50": {"layers": [1, 1, 1, 1], "width_per_group": 8},
    "vit_small_patch16_224": dict(_TINY_VIT, img_size=32),
    "vit_base_patch16_224": dict(_TINY_VIT, img_size=32),
    "vit_large_patch16_224": dict(_TINY_VIT, embed_dim=32, img_size=32),
    "vit_small_patch14_reg4_dinov2": dict(_TINY_VIT, img_size=28),
    "bert-base": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
}
_REHEARSAL = {
    "about": "tests: the gpu profile's code path (real sources served on 127.0.0.1) at tiny sizes; <= 90 s per "
             "chapter on 2 CPU cores",
    "architectures": _REHEARSAL_ARCHS,
    "data": {"n_train": 96, "n_valid": 32, "n_test": 64, "batch_size": 32, "num_workers": 0},
    "synthretina": {"gallery_size": 16, "epochs": 1, "n_train": 128, "image_size": 32, "cache": False},
    "simclr": {"image_size": 32, "epochs": 2, "batch_size": 32, "seeds": [0, 1], "save_at": [1, 2]},
    "dino": {"image_size": 32, "epochs": 2, "batch_size": 32, "out_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16,
             "n_local": 2, "local_size": 16, "warmup_epochs": 1, "seeds": [0, 1], "save_at": [1, 2],
             "ablation_epochs": 1, "monitor_size": 32, "attention_epochs": 1, "attention_local_size": 16,
             "attention_save_at": [1], "attention_images": 8},
    "mae": {"image_size": 32, "epochs": 2, "batch_size": 32, "decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2,
            "seeds": [0, 1], "save_at": [1, 2], "sweep_epochs": 1, "finetune_fractions": [1.0], "finetune_epochs": 1,
            "finetune_min_steps": 2, "recon_images": 2,
            "efficiency_models": [dict(m, size=s) for m, s in zip(_MAE_VIT_S16["efficiency_models"], (32, 28))],
            "efficiency_images": 2, "efficiency_batch": 2},
    "diffusion": {"image_size": 32, "vae_channels": [16, 16], "vae_epochs": 1, "vae_batch_size": 32,
                  "unet_channels": [16, 32], "unet_epochs": 1, "unet_batch_size": 32, "sample_steps": 3, "ddpm_steps": 4,
                  "n_per_class": 8, "grader_epochs": 1, "real_counts": [32, 96], "n_synthetic": 16, "ssl_steps": 2,
                  "seeds": [0, 1]},
    "flair": {"image_size": 32, "batch_size": 16, "seeds": [0, 1], "shots": [1, 2], "similarity_images": 4},
    "transfer": {"image_size": 32, "epochs": 1, "batch_size": 32, "seeds": [0, 1]},
    "protocol": {"fractions": [0.1, 1.0], "max_iter": 100, "knn_k": 3, "embedding": "pca", "finetune_epochs": 1,
                 "finetune_min_steps": 2},
}
_PROFILES["rehearsal"] = _merge(_PROFILES["gpu"], _REHEARSAL)

# The reference runs (helpers.reference, book page "Reproduction report"): the cpu profile's recipes, table and
# evaluation, with pretraining several times longer and one seed (its claims take test-set bootstrap intervals).
# Trained once by `python -m helpers.pretrain METHOD --profile reference` (<= 30 min per run on 2 CPU cores) and
# shipped; `make book` loads them.
_REFERENCE = {
    "about": "reference runs: the cpu recipes pretrained longer, one seed; trained once, shipped, loaded by the book",
    # ten times the cpu epochs for SimCLR and MAE, 7.5 for DINO: ~10 min each (cpu runs measured at 2.1, 4.2 and
    # 0.95 s per epoch on 2 cores); the checkpoints along the way give the budget curve within the reference run
    "simclr": {"epochs": 300, "seeds": [0], "save_at": [10, 30, 100, 300]},
    "dino": {"epochs": 150, "seeds": [0], "save_at": [10, 20, 50, 150]},
    "mae": {"epochs": 600, "seeds": [0], "save_at": [20, 60, 200, 600]},
}
_PROFILES["reference"] = _merge(_PROFILES["cpu"], _REFERENCE)
for _name in PROFILE_NAMES + ("reference",):
    _PROFILES[_name].setdefault("architectures", {})


def resolve(name: str | None = None) -> str:
    """Turn ``None``/``"auto"`` into a concrete profile name; reject unknown names."""
    if name is None or name == "":
        name = os.environ.get(ENV_VAR) or "auto"
    if not isinstance(name, str) or name not in VALID_NAMES:
        raise ValueError(f"unknown profile {name!r}; valid profiles: {', '.join(VALID_NAMES)}")
    if name == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return name


def load(name: str | None = None) -> Profile:
    """Load a profile by name (``None`` -> ``$RETINA_PROFILE`` -> ``auto``).

    Its ``architectures`` (empty but in ``rehearsal``) become the process's architecture overrides
    (:func:`architecture`), so that every encoder the chapter builds, and every official checkpoint it loads, has
    the profile's size without the chapter passing anything.
    """
    requested = name if name else (os.environ.get(ENV_VAR) or "auto")
    concrete = resolve(name)
    knobs = copy.deepcopy(_PROFILES[concrete])
    os.environ[ARCH_ENV] = json.dumps(knobs["architectures"])
    return Profile(concrete, requested, knobs)


def architecture(name: str) -> dict:
    """The keyword overrides the loaded profile sets for architecture ``name`` (a timm name, ``"bert-base"`` or
    ``"torchvision-resnet50"``); ``{}`` in every profile but ``rehearsal``. Read by :mod:`helpers.models`,
    :mod:`helpers.weights` and FLAIR's towers."""
    try:
        return dict(json.loads(os.environ.get(ARCH_ENV) or "{}").get(name, {}))
    except (ValueError, AttributeError):
        raise ValueError(f"${ARCH_ENV} is not a JSON object of architecture overrides; unset it") from None
