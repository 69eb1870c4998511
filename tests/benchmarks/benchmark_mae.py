"""MAE on SynthRetina at CPU scale: pretraining speed, and fine-tuning MAE init vs the same ViT from scratch.

Chapter 3's ``cpu`` knobs come from the rows of this script. For each configuration (ViT size, mask ratio,
pretraining epochs) it pretrains MAE once per seed, then fine-tunes the pretrained encoder and a fresh one (same
seed) on every diagnosis at once with RETFound's recipe (layer decay, label smoothing, warm-up + cosine), with a
fraction of the labels, and prints the balanced-accuracy gain in points with the linear-probe gain beside it.
Run it alone: two trainings at once on 2 cores slow each other several-fold.

    python tests/benchmarks/benchmark_mae.py --epochs 60 --decoder-dim 32 --ft-lr 3e-3 --layer-decay 0.65 \
        --ft-epochs 20 --fractions 1

The rows measured on 2 cores that chose the ``cpu`` knobs are in ``tests/benchmarks/results/mae.jsonl``: 20–30
pretraining epochs, or 10 fine-tuning epochs, gave no gain; 60 epochs with 20 fine-tuning epochs at 3e-3 and decay
0.65 gave DR +8 to +10 and AMD +25 to +28 points (one seed). Over seeds 0–2 against the fair baseline (the ViT from
scratch without layer decay, ``--scratch-decays 1.0``): DR +5.3 ± 0.7, AMD +21.3 ± 20.0 (one scratch seed learns
AMD), HR −0.4, glaucoma −4.2; with 10 % of the labels no gain. ``norm_pix_loss`` and a cheaper MAE (45 epochs,
1-block decoder) were weaker.
"""
from __future__ import annotations

import argparse
import copy
import json
import time

import torch

from helpers import data, env, evaluation, models, transfer
from helpers.methods import mae

TASKS = ("dr_grade", "hr_grade", "glaucoma", "amd")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=48)
    ap.add_argument("--patch", type=int, default=8)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--pool", default="avg")
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--mask-ratio", type=float, default=0.75)
    ap.add_argument("--norm-pix", action="store_true")
    ap.add_argument("--decoder-dim", type=int, default=64)
    ap.add_argument("--decoder-depth", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.1, 1.0])
    ap.add_argument("--ft-epochs", type=int, default=10)
    ap.add_argument("--ft-lr", type=float, default=2e-3)
    ap.add_argument("--ft-min-steps", type=int, default=150)
    ap.add_argument("--ft-bs", type=int, default=64)
    ap.add_argument("--layer-decay", type=float, default=0.75)
    ap.add_argument("--scratch-decays", type=float, nargs="+", default=None,
                    help="layer decays for the ViT from scratch (default: --layer-decay; 1.0 = none, as the MAE "
                         "paper's from-scratch recipe)")
    ap.add_argument("--out", default="mae.jsonl")
    a = ap.parse_args()
    print(f"device cpu, {torch.get_num_threads()} threads")
    table = data.load("synthretina", size=a.size, n_train=a.n_train, n_valid=500, n_test=500, seed=0, balanced=True,
                      progress=False)
    vit = dict(img_size=a.size, patch_size=a.patch, embed_dim=a.dim, depth=a.depth, num_heads=a.heads,
               global_pool=a.pool)
    for seed in a.seeds:
        env.seed_everything(seed)
        enc = models.small_vit(**vit)
        dls = data.dataloaders(table, None, bs=a.batch_size, size=a.size, device="cpu", augment=False,
                               normalize=False, seed=seed)
        learn = mae.mae_learner(dls, enc, a.mask_ratio, a.decoder_dim, a.decoder_depth, norm_pix_loss=a.norm_pix)
        t0 = time.perf_counter()
        with learn.no_bar(), learn.no_logging():
            learn.fit_one_cycle(a.epochs, a.lr)
        secs = time.perf_counter() - t0
        loss = float(learn.recorder.losses[-1])
        env.seed_everything(seed)
        rand = models.small_vit(**vit)
        lp = {}
        for name, e in (("mae", enc), ("random", rand)):
            f = evaluation.extract_features(e, table, size=a.size, cache=False)
            lp[name] = {t: evaluation.probe(f, table, t)["linear"]["balanced_accuracy"] for t in TASKS}
        row = dict(vit=vit, n_train=a.n_train, epochs=a.epochs, mask_ratio=a.mask_ratio, norm_pix=a.norm_pix,
                   decoder=[a.decoder_dim, a.decoder_depth], bs=a.batch_size, lr=a.lr, seed=seed, ft_lr=a.ft_lr,
                   layer_decay=a.layer_decay, ft_epochs=a.ft_epochs, ft_bs=a.ft_bs, label_smoothing=0.1, ft_wd=0.05,
                   seconds=round(secs, 1), img_per_s=round(a.epochs * a.n_train / secs, 1), final_loss=loss,
                   lp_gain={t: round(100 * (lp["mae"][t] - lp["random"][t]), 1) for t in TASKS}, lp=lp, ft={})
        print(f"seed {seed}: {secs:.0f} s pretraining ({row['img_per_s']} img/s), loss {loss:.3f}; "
              f"LP gain {row['lp_gain']}", flush=True)
        scratch_decays = a.scratch_decays or [a.layer_decay]
        row["scratch_decays"] = scratch_decays
        for frac in a.fractions:
            res, t1 = {}, time.perf_counter()
            runs = [("mae", enc, a.layer_decay)] + [(f"random@{d}" if len(scratch_decays) > 1 else "random", rand, d)
                                                    for d in scratch_decays]
            for name, e, decay in runs:
                env.seed_everything(seed)
                res[name] = transfer.fine_tune(copy.deepcopy(e), table, TASKS, frac, seed, epochs=a.ft_epochs,
                                               lr=a.ft_lr, min_steps=a.ft_min_steps, bs=a.ft_bs, size=a.size,
                                               device="cpu", layer_decay=decay, label_smoothing=0.1,
                                               wd=0.05)
            best = {t: max(res[n][t]["balanced_accuracy"] for n, _, _ in runs[1:]) for t in TASKS}
            gain = {t: round(100 * (res["mae"][t]["balanced_accuracy"] - best[t]), 1) for t in TASKS}
            row["ft"][str(frac)] = {"gain": gain, **{n: {t: res[n][t]["balanced_accuracy"] for t in TASKS}
                                                     for n, _, _ in runs},
                                    "seconds": round(time.perf_counter() - t1, 1), "epochs": res["mae"]["_epochs"]}
            print(f"  FT {frac}: gain over the best scratch {gain}; " + "; ".join(
                f"{n} {row['ft'][str(frac)][n]}" for n, _, _ in runs) + f" ({row['ft'][str(frac)]['seconds']} s)",
                flush=True)
        with open(a.out, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
