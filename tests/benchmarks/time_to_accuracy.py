"""Benchmark: end-to-end time to a linear-probe accuracy on SynthRetina, the book's SimCLR pipeline vs lightly's recipe.

Ours: chapter 1's pipeline — ``data.dataloaders`` (uint8 batches, no workers),
views made on the device by ``helpers.views.FundusViews`` inside
``simclr.simclr_learner``, fastai ``fit_one_cycle``.
Theirs: lightly's standard recipe — ``lightly.transforms.SimCLRTransform`` (its
default augmentations, at our image size and with the fundus normalisation) per
image in ``DataLoader`` workers (``--workers 2``, as on Colab), a plain PyTorch
loop with ``lightly.loss.NTXentLoss``.
The same encoder and head (``simclr.SimCLRModel``, same seed), the same loss
(NT-Xent at the same temperature), the same optimiser and schedule (AdamW,
one cycle: fastai's on our side, ``torch.optim.lr_scheduler.OneCycleLR`` with
fastai's settings on theirs), the same batch, the same machine, one after the other.

After every epoch the encoder's features are probed (the shared linear probe,
mean balanced accuracy over the four diagnoses); a run stops when it reaches
the target: ``--target``, or by default the randomly initialised encoder's
probe plus ``--gain`` points. Time counts everything but the probes (data
loading, views, training); the probes' time is printed beside it. Prints both
times and their ratio (lightly / ours: > 1 means the book's pipeline gets there
sooner) and appends a JSON line to ``--out``. Run it alone: two trainings at
once on 2 cores slow each other several-fold.

    .venv/bin/python tests/benchmarks/time_to_accuracy.py                  # the cpu profile's chapter-1 knobs
    .venv/bin/python tests/benchmarks/time_to_accuracy.py --lightly-recipe fundus   # lightly set to our ranges
    .venv/bin/python tests/benchmarks/time_to_accuracy.py --quick          # a few seconds: runs end to end
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from helpers import data, env, evaluation, models
from helpers.methods import simclr
from helpers.views import FUNDUS_MEAN, FUNDUS_STD, FundusViews

DIAGNOSES = ("dr_grade", "hr_grade", "glaucoma", "amd")


def probe_score(encoder, table, size, tasks, max_iter):
    """Mean linear-probe balanced accuracy over ``tasks``, and the seconds it took."""
    t0 = time.perf_counter()
    was = encoder.training
    feats = evaluation.extract_features(encoder, table, size=size, cache=False)
    encoder.train(was)
    score = float(np.mean([evaluation.probe(feats, table, t, max_iter=max_iter)["linear"]["balanced_accuracy"]
                           for t in tasks]))
    return score, time.perf_counter() - t0


class Clock:
    """Training time to the target, with the probes' time kept apart."""

    def __init__(self, target, encoder, table, a):
        self.target, self.encoder, self.table, self.a = target, encoder, table, a
        self.t0, self.probe_s, self.epochs, self.reached = time.perf_counter(), 0.0, [], None

    def epoch_done(self, epoch) -> bool:
        train_s = time.perf_counter() - self.t0 - self.probe_s
        score, s = probe_score(self.encoder, self.table, self.a.size, self.a.tasks, self.a.max_iter)
        self.probe_s += s
        self.epochs.append({"epoch": epoch + 1, "train_seconds": round(train_s, 2), "probe": round(score, 4)})
        print(f"  epoch {epoch + 1:>3}: {train_s:7.1f} s training, probe {score:.3f} (target {self.target:.3f})",
              flush=True)
        if score >= self.target and self.reached is None:
            self.reached = train_s
        return self.reached is not None

    def result(self):
        last = self.epochs[-1] if self.epochs else {}
        return {"seconds": None if self.reached is None else round(self.reached, 2),
                "epochs": len(self.epochs), "best_probe": max((e["probe"] for e in self.epochs), default=None),
                "seconds_per_epoch": round(last.get("train_seconds", 0) / max(len(self.epochs), 1), 3),
                "probe_seconds": round(self.probe_s, 2), "history": self.epochs}


def run_ours(table, target, a):
    from fastai.callback.core import Callback, CancelFitException
    env.seed_everything(a.seed)
    enc, _ = models.create_encoder(a.encoder)
    dls = data.dataloaders(table, None, bs=a.bs, size=a.size, device="cpu", augment=False, normalize=False,
                           seed=a.seed, splits=("train", "valid"))
    learn = simclr.simclr_learner(dls, enc, proj_dim=a.proj_dim, temperature=a.temperature, views=FundusViews())
    clock = Clock(target, learn.model.encoder, table, a)

    class Stop(Callback):
        order = 99

        def after_epoch(self):
            if clock.epoch_done(self.epoch):
                raise CancelFitException()
    clock.t0 = time.perf_counter()
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(a.max_epochs, a.lr, cbs=[Stop()])
    return clock.result()


class _Views(torch.utils.data.Dataset):
    """The training images as PIL pictures through lightly's transform (two views each), in the workers."""

    def __init__(self, table, transform):
        self.table, self.idx, self.transform = table, table.split_index("train"), transform

    def __len__(self):
        return len(self.idx)

    def __getitem__(self, i):
        from PIL import Image
        return self.transform(Image.fromarray(self.table.image(int(self.idx[i]))))


def run_lightly(table, target, a):
    from lightly.loss import NTXentLoss
    from lightly.transforms import SimCLRTransform
    env.seed_everything(a.seed)
    enc, _ = models.create_encoder(a.encoder)
    model = simclr.SimCLRModel(enc, a.proj_dim)
    norm = {"mean": list(FUNDUS_MEAN), "std": list(FUNDUS_STD)}
    if a.lightly_recipe == "standard":  # lightly's defaults (SimCLR's ImageNet recipe, hue jitter included)
        tf = SimCLRTransform(input_size=a.size, normalize=norm)
    else:  # the same transform set to the book's fundus-safe ranges: only the pipeline differs
        v = FundusViews()
        tf = SimCLRTransform(input_size=a.size, cj_prob=1.0, cj_bright=v.brightness, cj_contrast=v.contrast,
                             cj_sat=0.0, cj_hue=0.0, min_scale=v.crop_scale[0], random_gray_scale=0.0,
                             gaussian_blur=v.blur_p, sigmas=(0.1, v.blur_sigma), rr_prob=1.0,
                             rr_degrees=v.max_rotate, normalize=norm)
    loader = torch.utils.data.DataLoader(_Views(table, tf), batch_size=a.bs, shuffle=True, drop_last=True,
                                         num_workers=a.workers, persistent_workers=a.workers > 0)
    loss_fn = NTXentLoss(temperature=a.temperature)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.99), weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, a.lr, total_steps=a.max_epochs * len(loader), pct_start=0.25,
                                                div_factor=25, final_div_factor=1e5 / 25, base_momentum=0.85,
                                                max_momentum=0.95)  # fastai's fit_one_cycle defaults
    clock = Clock(target, enc, table, a)
    clock.t0 = time.perf_counter()
    for epoch in range(a.max_epochs):
        model.train()
        for x0, x1 in loader:
            loss = loss_fn(model(x0), model(x1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if clock.epoch_done(epoch):
            break
    return clock.result()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", default="small_cnn_narrow")
    ap.add_argument("--size", type=int, default=48)
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--n-eval", type=int, default=500, help="validation and test images (the probe's)")
    ap.add_argument("--bs", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--temperature", type=float, default=0.2)
    ap.add_argument("--proj-dim", type=int, default=64)
    ap.add_argument("--max-epochs", type=int, default=30)
    ap.add_argument("--workers", type=int, default=2, help="lightly's DataLoader workers (Colab: 2)")
    ap.add_argument("--target", type=float, default=None, help="probe target (default: random init + --gain)")
    ap.add_argument("--gain", type=float, default=5.0, help="points above random init (default 5)")
    ap.add_argument("--max-iter", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", choices=["ours", "lightly"], default=None)
    ap.add_argument("--lightly-recipe", choices=["standard", "fundus"], default="standard",
                    help="lightly's default SimCLRTransform, or the same set to the book's fundus-safe ranges")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "time_to_accuracy.jsonl"))
    ap.add_argument("--quick", action="store_true", help="tiny sizes and one epoch: checks it runs end to end")
    a = ap.parse_args(argv)
    a.tasks = DIAGNOSES
    if a.quick:
        a.size, a.n_train, a.n_eval, a.bs, a.max_epochs, a.max_iter, a.tasks = 32, 128, 64, 16, 1, 50, ("amd",)
        a.target = -1.0  # any probe reaches it: one epoch each
    print(f"device cpu, {torch.get_num_threads()} threads; {a.encoder} at {a.size}px, {a.n_train} images, "
          f"batch {a.bs}, lightly workers {a.workers}", flush=True)
    table = data.load("synthretina", size=a.size, n_train=a.n_train, n_valid=a.n_eval, n_test=a.n_eval, seed=0,
                      balanced=True, progress=False)
    target = a.target
    if target is None:
        env.seed_everything(a.seed)
        rand, _ = probe_score(models.create_encoder(a.encoder)[0], table, a.size, a.tasks, a.max_iter)
        target = rand + a.gain / 100
        print(f"random init probe {rand:.3f}: target {target:.3f}", flush=True)
    row = {"encoder": a.encoder, "size": a.size, "n_train": a.n_train, "bs": a.bs, "lr": a.lr,
           "temperature": a.temperature, "max_epochs": a.max_epochs, "workers": a.workers, "target": round(target, 4),
           "tasks": list(a.tasks), "threads": torch.get_num_threads(), "quick": a.quick,
           "lightly_recipe": a.lightly_recipe, "seed": a.seed}
    for name, fn in (("ours", run_ours), ("lightly", run_lightly)):
        if a.only in (None, name):
            print(f"{name}:", flush=True)
            row[name] = fn(table, target, a)
    o, t = row.get("ours", {}).get("seconds"), row.get("lightly", {}).get("seconds")
    row["ratio"] = round(t / o, 2) if o and t else None
    if o and t:
        print(f"time to probe {target:.3f}: ours {o:.1f} s, lightly {t:.1f} s, ratio (lightly / ours) {t / o:.2f}")
    else:
        for name in ("ours", "lightly"):
            if name in row:
                r = row[name]
                when = "not reached" if r["seconds"] is None else f"{r['seconds']} s"
                print(f"{name}: {when} in {r['epochs']} epochs, best probe {r['best_probe']}, "
                      f"{r['seconds_per_epoch']} s/epoch")
        print("ratio: undefined (a run did not reach the target within --max-epochs)")
    with open(a.out, "a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
