"""Benchmark: MAE's model-FLOPs utilisation (MFU), the share of the chip's peak that an MAE training step uses.

The FLOPs of one training step (forward and backward of chapter 3's ``MAEModel``, the optimiser not counted)
are counted by PyTorch's ``torch.utils.flop_counter.FlopCounterMode`` (matrix products and convolutions, the
operations that use the tensor cores). The step is then timed over ``--steps`` steps after ``--warmup``, in
bf16 autocast on GPUs from Ampere on (``helpers.runs.amp_mode``: the book's own choice) and in fp32 elsewhere.
MFU = counted FLOPs per second ÷ peak. The peak is ``--peak-tflops``, else the dense bf16/fp16 tensor-core peak
of a known GPU from its vendor's datasheet (``PEAK_TFLOPS``); on an unknown device MFU is left out and the
achieved TFLOP/s are printed alone. The book page "Scaling out" explains what the number means. Run it alone.

    python tests/benchmarks/mfu_mae.py                                   # RETFound's ViT-L/16, 224 px, decoder 512 x 8
    python tests/benchmarks/mfu_mae.py --arch vit_base_patch16_224 --bs 256 --compile
    python tests/benchmarks/mfu_mae.py --quick                           # seconds on a CPU: runs end to end
"""
from __future__ import annotations

import argparse
import json
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from helpers import env, models, runs
from helpers.methods import mae

# dense tensor-core peaks in TFLOP/s (bf16; fp16 for the T4, which has no bf16), from the vendors' datasheets;
# the first name found in torch.cuda.get_device_name() wins
PEAK_TFLOPS = {"H100 PCIe": 756.0, "H100": 989.4, "H200": 989.4, "A100": 312.0, "L4": 121.0, "T4": 65.0}


def peak_of(device: torch.device, given: float | None) -> float | None:
    """The peak TFLOP/s MFU is measured against: ``given``, else a known GPU's, else ``None``."""
    if given:
        return float(given)
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def step_fn(model, opt, x, dtype):
    """One MAE training step (chapter 3's loss on the removed patches); returns the loss."""
    ctx = torch.autocast(device_type=x.device.type, dtype=dtype) if dtype is not None else nullcontext()
    with ctx:
        pred, mask, target = model(x)
        loss = mae.mae_loss(pred.float(), target.float(), mask)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss


def count_flops(model, x, dtype) -> int:
    """FLOPs of one forward + backward, counted by PyTorch on a copy of the step (no optimiser update kept)."""
    from torch.utils.flop_counter import FlopCounterMode
    ctx = torch.autocast(device_type=x.device.type, dtype=dtype) if dtype is not None else nullcontext()
    with FlopCounterMode(display=False) as counter:
        with ctx:
            pred, mask, target = model(x)
            loss = mae.mae_loss(pred.float(), target.float(), mask)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def measure(a) -> dict:
    device = env.get_device(a.device)
    env.seed_everything(a.seed)
    encoder, _ = models.create_encoder(a.arch, img_size=a.size)
    model = mae.MAEModel(encoder, a.mask_ratio, a.decoder_dim, a.decoder_depth, a.decoder_heads).to(device)
    mode = runs.amp_mode(device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mode) if a.precision == "auto" else \
        {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[a.precision]
    x = torch.randn(a.bs, 3, a.size, a.size, device=device)
    flops = count_flops(model, x, dtype)
    run = torch.compile(model) if a.compile else model
    opt = torch.optim.AdamW(model.parameters(), lr=1.5e-4, weight_decay=0.05)
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(a.warmup):
        step_fn(run, opt, x, dtype) if scaler is None else _scaled_step(run, opt, x, dtype, scaler)
    sync()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step_fn(run, opt, x, dtype) if scaler is None else _scaled_step(run, opt, x, dtype, scaler)
    sync()
    seconds = (time.perf_counter() - t0) / a.steps
    achieved = flops / seconds / 1e12
    peak = peak_of(device, a.peak_tflops)
    return {"device": env.describe_device(device), "arch": a.arch, "size": a.size, "bs": a.bs,
            "mask_ratio": a.mask_ratio, "decoder": [a.decoder_dim, a.decoder_depth, a.decoder_heads],
            "precision": {torch.bfloat16: "bf16", torch.float16: "fp16", None: "fp32"}[dtype], "compile": a.compile,
            "flops_per_step": flops, "seconds_per_step": round(seconds, 5), "images_per_s": round(a.bs / seconds, 1),
            "achieved_tflops": round(achieved, 3), "peak_tflops": peak,
            "mfu": None if peak is None else round(achieved / peak, 4), "torch": torch.__version__, "quick": a.quick}


def _scaled_step(model, opt, x, dtype, scaler):
    """The fp16 step with loss scaling (GPUs before Ampere)."""
    with torch.autocast(device_type=x.device.type, dtype=dtype):
        pred, mask, target = model(x)
        loss = mae.mae_loss(pred.float(), target.float(), mask)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    opt.zero_grad(set_to_none=True)
    return loss


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="vit_large_patch16_224", help="a timm ViT (RETFound: ViT-L/16)")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--bs", type=int, default=64, help="images per step on this device")
    ap.add_argument("--mask-ratio", type=float, default=0.75)
    ap.add_argument("--decoder-dim", type=int, default=512, help="the MAE paper's decoder: 512 wide, 8 blocks")
    ap.add_argument("--decoder-depth", type=int, default=8)
    ap.add_argument("--decoder-heads", type=int, default=16)
    ap.add_argument("--precision", choices=["auto", "bf16", "fp16", "fp32"], default="auto",
                    help="auto: the book's choice for the device (runs.amp_mode)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model first")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--peak-tflops", type=float, default=None, help="the chip's peak (default: known GPUs)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "mfu_mae.jsonl"))
    ap.add_argument("--quick", action="store_true", help="a tiny ViT for a few steps: checks it runs end to end")
    a = ap.parse_args(argv)
    if a.quick:
        a.arch, a.size, a.bs, a.steps, a.warmup = "vit_tiny_patch16_224", 64, 4, 2, 1
        a.decoder_dim, a.decoder_depth, a.decoder_heads = 32, 1, 2
    row = measure(a)
    mfu = "unknown peak: pass --peak-tflops" if row["mfu"] is None else f"MFU {100 * row['mfu']:.1f} %"
    print(f"{row['device']}: {a.arch} at {a.size} px, batch {a.bs}, {row['precision']}: "
          f"{row['flops_per_step'] / 1e12:.3f} TFLOP per step, {row['images_per_s']} images/s, "
          f"{row['achieved_tflops']} TFLOP/s; {mfu}")
    with open(a.out, "a") as f:
        f.write(json.dumps(row) + "\n")
    return row


if __name__ == "__main__":
    main()
