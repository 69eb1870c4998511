"""Benchmark: our SimCLR training step vs lightly's reference pieces, same encoder and batch, one run.

Ours: helpers.methods.simclr (SimCLRModel with the MLP head, nt_xent_loss) and helpers.views.FundusViews on the device.
Theirs: lightly's SimCLRProjectionHead + NTXentLoss with the same views.
Prints images/s (original images per second; each gives two views) for each and the ratio.
On CUDA both run with mixed precision (torch.autocast + GradScaler).

Run:  .venv/bin/python tests/benchmarks/benchmark_simclr.py [--arch resnet18] [--size 64] [--bs 128] [--steps 10]
"""
import argparse
import time

import timm
import torch

from helpers import env, views as views_mod
from helpers.methods import simclr


def make_step(model, loss_fn, views, device, amp):
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    scaler = torch.amp.GradScaler(enabled=amp)

    def step(x):
        with torch.no_grad():
            v = torch.cat([views(x), views(x)])
        with torch.autocast(device_type=device.type, enabled=amp):
            z = model(v)
            n = x.shape[0]
            loss = loss_fn(z[:n].float(), z[n:].float())
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return loss
    return step


def bench(step, x, steps, device):
    for _ in range(2):
        step(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * x.shape[0] / (time.perf_counter() - t)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--bs", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3, help="alternate ours/theirs this many times; best of each")
    a = p.parse_args()
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead
    device = env.get_device()
    amp = device.type == "cuda"
    x = torch.rand(a.bs, 3, a.size, a.size, device=device)
    views = views_mod.FundusViews().to(device)
    torch.manual_seed(0)
    enc = timm.create_model(a.arch, num_classes=0)
    ours_model = simclr.SimCLRModel(enc, 128, 512).to(device)
    torch.manual_seed(0)
    enc2 = timm.create_model(a.arch, num_classes=0)
    theirs_model = torch.nn.Sequential(enc2, SimCLRProjectionHead(enc2.num_features, 512, 128)).to(device)
    ours = make_step(ours_model, lambda z1, z2: simclr.nt_xent_loss(z1, z2, 0.5), views, device, amp)
    lightly_loss = NTXentLoss(temperature=0.5)
    theirs = make_step(theirs_model, lambda z1, z2: lightly_loss(z1, z2), views, device, amp)
    best = {"ours": 0.0, "lightly": 0.0}
    for _ in range(a.rounds):
        best["ours"] = max(best["ours"], bench(ours, x, a.steps, device))
        best["lightly"] = max(best["lightly"], bench(theirs, x, a.steps, device))
    print(f"SimCLR step, {a.arch} at {a.size}px, batch {a.bs} (2 views each), device {env.describe_device(device)}, "
          f"mixed precision {'on' if amp else 'off'}, threads {torch.get_num_threads()}")
    print(f"  ours    : {best['ours']:8.1f} images/s")
    print(f"  lightly : {best['lightly']:8.1f} images/s")
    print(f"  ratio ours/lightly: {best['ours'] / best['lightly']:.3f}")


if __name__ == "__main__":
    main()
