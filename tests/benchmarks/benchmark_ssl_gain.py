"""Probe gain per CPU-minute of self-supervised pretraining on SynthRetina (chapter 1's knobs come from this table).

For each configuration (method, encoder, image size, unlabelled images, epochs,
views) it pretrains SimCLR (or DINO, probing its teacher) once per seed, extracts frozen features of the pretrained
and of the same encoder randomly initialised (same seed), fits the shared
linear probe on every SynthRetina task and prints the balanced-accuracy gain
(SSL minus random, in points) beside the pretraining time. Run it alone: two
trainings at once on 2 cores slow each other several-fold.

    python tests/benchmarks/benchmark_ssl_gain.py --encoder small_cnn --size 48 --epochs 15 30 --seeds 0
    python tests/benchmarks/benchmark_ssl_gain.py --views no-camera ...   # the colour-shortcut ablation
    python tests/benchmarks/benchmark_ssl_gain.py --method dino ...       # chapter 2's method, same protocol

Rows are appended as JSON lines to ``--out`` so a grid can be run piece by piece.
The rows measured on 2 cores that chose the ``cpu`` knobs are kept in
``tests/benchmarks/results/`` (``--table --out FILE`` prints one as Markdown);
the first ``camera-wide`` row ran while another job shared the cores.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from helpers import data, env, evaluation, models
from helpers.methods import simclr
from helpers.views import FundusViews

TASKS = ("dr_grade", "hr_grade", "glaucoma", "amd", "site_id")
VIEWS = {"camera": dict(), "camera-wide": dict(gain=0.2, gamma=0.2, blur_sigma=1.0),
         "no-camera": dict(gain=0.0, gamma=0.0, noise=0.0, blur_p=0.0),
         "small-crops": dict(crop_scale=(0.2, 0.6))}


def finetune_gain(ssl_encoder, a, table, seed):
    """Fine-tuning with a fraction of the labels, SSL init minus random init, per diagnosis (points)."""
    import copy
    from helpers import profiles, transfer
    E = profiles.load("cpu").protocol
    kw = dict(epochs=E.finetune_epochs, freeze_epochs=E.finetune_freeze_epochs, lr=E.finetune_lr,
              lr_mult=E.finetune_lr_mult, min_steps=E.finetune_min_steps, bs=64, size=a.size, device="cpu")
    out = {}
    for name, enc in (("ssl", copy.deepcopy(ssl_encoder)), ("random", None)):
        env.seed_everything(seed)
        enc = enc if enc is not None else models.create_encoder(a.encoder)[0]
        out[name] = transfer.fine_tune(enc, table, TASKS[:4], a.finetune, seed, **kw)
    return {t: round(100 * (out["ssl"][t]["balanced_accuracy"] - out["random"][t]["balanced_accuracy"]), 1)
            for t in TASKS[:4]}


def probe_all(encoder, table, size):
    feats = evaluation.extract_features(encoder, table, size=size, cache=False)
    out = {}
    for t in TASKS:
        out[t] = evaluation.probe(feats, table, t, max_iter=1000)["linear"]["balanced_accuracy"]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", choices=["simclr", "dino"], default="simclr")
    ap.add_argument("--encoder", default="small_cnn")
    ap.add_argument("--size", type=int, default=48)
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--epochs", type=int, nargs="+", default=[15])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--views", choices=sorted(VIEWS), default="camera")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--temperature", type=float, default=0.2)
    ap.add_argument("--momentum", type=float, default=0.996, help="DINO: the teacher's base EMA momentum")
    ap.add_argument("--out", default="ssl_gain.jsonl")
    ap.add_argument("--finetune", type=float, default=None, metavar="FRACTION",
                    help="also fine-tune SSL and random init with this fraction of the labels (cpu profile's recipe)")
    ap.add_argument("--table", action="store_true", help="print the rows gathered in --out as a Markdown table")
    a = ap.parse_args()
    if a.table:
        return print_table(a.out)
    print(f"device cpu, {torch.get_num_threads()} threads")
    table = data.load("synthretina", size=a.size, n_train=a.n_train, n_valid=500, n_test=500, seed=0, balanced=True,
                      progress=False)
    for seed in a.seeds:
        env.seed_everything(seed)
        rand = probe_all(models.create_encoder(a.encoder)[0], table, a.size)
        for epochs in a.epochs:
            env.seed_everything(seed)
            enc, _ = models.create_encoder(a.encoder)
            dls = data.dataloaders(table, None, bs=a.batch_size, size=a.size, device="cpu", augment=False,
                                   normalize=False, seed=seed)
            if a.method == "dino":
                from helpers.methods import dino
                learn = dino.dino_learner(dls, enc, out_dim=1024, hidden_dim=256, bottleneck_dim=64, n_local=4,
                                          momentum=a.momentum, views=FundusViews(**VIEWS[a.views]))
            else:
                learn = simclr.simclr_learner(dls, enc, proj_dim=64, temperature=a.temperature,
                                              views=FundusViews(**VIEWS[a.views]))
            t0 = time.perf_counter()
            with learn.no_bar(), learn.no_logging():
                learn.fit_one_cycle(epochs, a.lr)
            secs = time.perf_counter() - t0
            if a.method == "dino":  # probe the teacher, as DINO does
                enc = learn.model.teacher[0]
            ssl = probe_all(enc, table, a.size)
            row = dict(method=a.method if a.method == "simclr" else f"dino m={a.momentum}", encoder=a.encoder,
                       size=a.size, n_train=a.n_train, epochs=epochs, seed=seed, views=a.views,
                       bs=a.batch_size, lr=a.lr, temperature=a.temperature, seconds=round(secs, 1),
                       img_per_s=round(epochs * a.n_train / secs, 1), random=rand, ssl=ssl,
                       gain={t: round(100 * (ssl[t] - rand[t]), 1) for t in TASKS})
            if a.finetune:
                row["finetune_fraction"] = a.finetune
                row["finetune_gain"] = finetune_gain(enc, a, table, seed)
                print("  fine-tuning gain at", a.finetune, row["finetune_gain"], flush=True)
            with open(a.out, "a") as f:
                f.write(json.dumps(row) + "\n")
            g = row["gain"]
            print(f"{a.method} {a.encoder:>16} {a.size:>3}px n={a.n_train} ep={epochs:>3} seed={seed} {a.views:>10} "
                  f"{secs:6.0f}s {row['img_per_s']:6.0f} img/s | gain DR {g['dr_grade']:+5.1f} HR {g['hr_grade']:+5.1f} "
                  f"glaucoma {g['glaucoma']:+5.1f} AMD {g['amd']:+5.1f} site {g['site_id']:+5.1f} | "
                  f"per min DR {g['dr_grade'] / secs * 60:+.1f}", flush=True)


def print_table(path):
    rows = [json.loads(line) for line in open(path)]
    print("| method | encoder | px | images | epochs | views | seed | pretraining s | img/s | DR | HR | glaucoma | AMD | site "
          "| DR+HR+gl+AMD gain per CPU-min |")
    print("|" + "---|" * 15)
    for r in rows:
        g = r["gain"]
        total = sum(g[t] for t in TASKS[:4])
        print(f"| {r.get('method', 'simclr')} | {r['encoder']} | {r['size']} | {r['n_train']} | {r['epochs']} | {r['views']} | {r['seed']} | "
              f"{r['seconds']:.0f} | {r['img_per_s']:.0f} | {g['dr_grade']:+.1f} | {g['hr_grade']:+.1f} | "
              f"{g['glaucoma']:+.1f} | {g['amd']:+.1f} | {g['site_id']:+.1f} | {total / r['seconds'] * 60:+.1f} |")


if __name__ == "__main__":
    main()
