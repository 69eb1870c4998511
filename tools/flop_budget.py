"""Each chapter's training compute in a profile (default ``gpu``), estimated without a GPU: one optimisation step of
every training the chapter runs is counted by PyTorch's ``FlopCounterMode`` on the meta device (shapes only, no
arithmetic), multiplied by its steps; the saved activations of that step (what backward keeps) are summed the same
way. At 25 TFLOP/s — a T4's dense fp16 peak (65 TFLOP/s) at a realistic ~40 % utilisation — the total gives T4
minutes; activations are reported in fp16, as a T4 trains here (``runs.mixed_precision``).

The jobs are read from the chapters' cells and the profile's knobs (the comment on each names them); data sizes are
RetinaMNIST's (1,080 / 120 / 400 images) since the gpu profile takes every image. Used by tests/test_flop_budget.py
and by the table on book/instructors.md:  ``python tools/flop_budget.py [--profile gpu] [--markdown]``.
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
T4_FLOPS = 25e12      # FLOP/s: 65 TFLOP/s dense fp16 peak at ~40 % utilisation
BUDGET_MIN = 20.0     # minutes per chapter on a fresh Colab runtime
MEMORY_GB = 14.0      # of a T4's 16 GB, what activations may take
N_TRAIN, N_VALID, N_TEST = 1080, 120, 400   # RetinaMNIST's splits


@dataclass
class Job:
    chapter: str
    what: str
    runs: int          # how many such trainings (seeds, sweeps, inits)
    steps: int         # optimisation steps per run (or forward-only batches when ``train`` is False)
    flops: float = 0.0  # per step
    act_gb: float = 0.0  # saved activations of one step, fp16
    train: bool = True

    @property
    def total(self) -> float:
        return self.runs * self.steps * self.flops


def _count(build, inputs, train: bool = True, loss=None):
    """(FLOPs, saved-activation GB in fp16) of one step of ``build()`` on ``inputs()`` (fwd + bwd when ``train``)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    with torch.device("meta"):
        model = build()
        args = inputs()
    saved = [0]

    def pack(t):
        if isinstance(t, torch.Tensor) and t.dtype.is_floating_point:
            saved[0] += t.numel() * 2  # fp16 under mixed precision
        return t

    counter = FlopCounterMode(display=False)
    with counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        if train:
            out = model(*args)
            value = loss(out) if loss else sum(o.float().mean() for o in (out if isinstance(out, (list, tuple))
                                                                         else [out]))
            value.backward()
        else:
            with torch.no_grad():
                model(*args)
    return float(counter.get_total_flops()), saved[0] / 1e9


def _timm(arch, **kw):
    import timm
    return lambda: timm.create_model(arch, pretrained=False, **kw)


def _images(b, size, n=1):
    import torch
    return lambda: tuple(torch.randn(b, 3, size, size) for _ in range(n))


def _as_module(vae):
    """The autoencoder as chapter 4 trains it: ``KLAutoencoder`` (encode, sample, decode)."""
    from helpers.methods.diffusion import KLAutoencoder
    return vae if isinstance(vae, KLAutoencoder) else KLAutoencoder(vae)


def _chapter_function(chapter: str, name: str):
    """The function ``name`` as chapter ``chapter`` defines it in one of its cells (read from the notebook, so the
    estimate follows the chapter when its model changes)."""
    import ast
    import json

    import torch
    from torch import nn
    nb = json.loads((ROOT / "notebooks" / f"{chapter}.ipynb").read_text())
    for cell in nb["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] == "code" and f"def {name}(" in source:
            node = next(n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == name)
            scope = {"nn": nn, "torch": torch}
            exec(compile(ast.Module([node], []), f"{chapter}.ipynb", "exec"), scope)
            return scope[name]
    raise LookupError(f"{chapter}.ipynb defines no {name}()")


def _steps(n_images: int, batch: int, epochs: int, min_steps: int = 0) -> int:
    return max(math.floor(n_images / batch) * epochs, min_steps)


def jobs(profile: str = "gpu") -> list[Job]:
    import torch
    from torch import nn

    from helpers import profiles
    P = profiles.load(profile)
    bs = P.data.batch_size
    out: list[Job] = []

    def add(chapter, what, runs, steps, build, inputs, train=True, loss=None):
        flops, act = _count(build, inputs, train, loss)
        out.append(Job(chapter, what, runs, steps, flops, act, train))

    # chapter 0: two small CNNs (DR grade, HR grade) on SynthRetina (synthretina.*)
    S = P.synthretina

    small_cnn = _chapter_function("00_synthretina", "small_cnn")  # the chapter's own definition, not a copy
    add("00_synthretina", "small CNN classifiers", 2, _steps(S.n_train, bs, S.epochs), lambda: small_cnn(5),
        _images(bs, S.image_size))

    # chapter 1: SimCLR (simclr.*): seeds + temperature sweep + the no-camera ablation; two views per image
    K, E = P.simclr, P.protocol
    runs = len(K.seeds) + len(K.sweep_temperatures) + 1
    add("01_simclr", f"SimCLR pretraining ({K.encoder}, 2 views)", runs, _steps(N_TRAIN, K.batch_size, K.epochs),
        _timm(K.encoder, num_classes=0), _images(2 * K.batch_size, K.image_size))
    ft = _steps(N_TRAIN, bs, E.finetune_epochs, E.finetune_min_steps)
    n_ft = len(E.fractions) * len(K.seeds) * (1 + len(K.compare_inits))
    add("01_simclr", "protocol fine-tunes (fractions x seeds x inits)", n_ft, ft, _timm(K.encoder, num_classes=5),
        _images(bs, K.image_size))

    # chapter 2: DINO (dino.*): student on 2 global + n_local crops, teacher on the globals (forward only)
    D = P.dino
    # the seeds and the attention run at `epochs`, two short ablations at `ablation_epochs`
    steps = (len(D.seeds) + 1) * _steps(N_TRAIN, D.batch_size, D.epochs) + 2 * _steps(N_TRAIN, D.batch_size,
                                                                                        D.ablation_epochs)
    kw = dict(num_classes=0, **dict(D.encoder_kwargs))
    g, l_ = _count(_timm(D.encoder, **kw), _images(2 * D.batch_size, D.image_size))
    lo, lo_act = _count(_timm(D.encoder, **kw), _images(D.n_local * D.batch_size, D.local_size))
    te, _ = _count(_timm(D.encoder, **kw), _images(2 * D.batch_size, D.image_size), train=False)
    out.append(Job("02_dino", f"DINO pretraining ({D.encoder}, 2x{D.image_size} + {D.n_local}x{D.local_size} crops)",
                   1, steps, g + lo + te, l_ + lo_act))

    # chapter 3: MAE (mae.*): seeds at `epochs`, the mask-ratio sweep at `sweep_epochs`, fine-tunes
    M = P.mae
    from helpers.methods.mae import MAEModel

    def mae_model():
        import timm
        enc = timm.create_model(M.encoder, pretrained=False, num_classes=0, **dict(M.encoder_kwargs))
        return MAEModel(enc, M.mask_ratio, M.decoder_dim, M.decoder_depth, M.decoder_heads)
    steps = len(M.seeds) * _steps(N_TRAIN, M.batch_size, M.epochs) + len(M.sweep_ratios) * len(M.sweep_seeds) * \
        _steps(N_TRAIN, M.batch_size, M.sweep_epochs)
    add("03_mae", f"MAE pretraining ({M.encoder}, mask {M.mask_ratio})", 1, steps, mae_model,
        _images(M.batch_size, M.image_size), loss=lambda o: o[0].float().mean())
    n_ft = len(M.finetune_fractions) * (len(M.seeds) + len(M.compare_inits)
                                        + (len(M.sweep_ratios) if M.sweep_finetune else 0))
    add("03_mae", "fine-tunes (fractions x pretrained encoders)", n_ft,
        _steps(N_TRAIN, bs, M.finetune_epochs, M.finetune_min_steps), _timm(M.encoder, num_classes=5),
        _images(bs, M.image_size))

    # chapter 4: latent diffusion (diffusion.*): the autoencoder, the denoiser per real count and seed, the graders
    F = P.diffusion
    from helpers.methods import diffusion
    add("04_diffusion", "KL autoencoder", 1, _steps(N_TRAIN, F.vae_batch_size, F.vae_epochs),
        lambda: _as_module(diffusion.autoencoder(tuple(F.vae_channels), F.latent_channels)),
        _images(F.vae_batch_size, F.image_size), loss=lambda o: o[0].float().mean())
    lat = F.image_size // 2 ** (len(F.vae_channels) - 1)
    n_cls = 5
    steps = sum(_steps(c, F.unet_batch_size, F.unet_epochs) for c in F.real_counts) * len(F.seeds)
    add("04_diffusion", f"class-conditional UNet on {F.latent_channels}x{lat}x{lat} latents", 1, steps,
        lambda: diffusion.unet(lat, F.latent_channels, n_cls, tuple(F.unet_channels)),
        lambda: (torch.randn(F.unet_batch_size, F.latent_channels, lat, lat),
                 torch.zeros(F.unet_batch_size, dtype=torch.long), torch.zeros(F.unet_batch_size, dtype=torch.long)),
        loss=lambda o: (o.sample if hasattr(o, "sample") else o).float().mean())
    g_runs = len(F.seeds) * (len(F.real_counts) + 1)
    add("04_diffusion", "DR graders (real / real + synthetic)", g_runs,
        _steps(max(F.real_counts) + F.n_synthetic, bs, F.grader_epochs), _timm("resnet18", num_classes=5),
        _images(bs, F.image_size))

    # chapter 5: FLAIR's released model, no training (flair.epochs = 0): embeddings of every image at image_size
    L = P.flair
    add("05_flair", f"FLAIR image embeddings ({L.encoder} at {L.image_size} px, forward only)", 1,
        math.ceil((N_TRAIN + N_VALID + N_TEST) / L.batch_size), _timm(L.encoder, num_classes=0),
        _images(L.batch_size, L.image_size), train=False)

    # chapter 6: LP / FT / LP-FT (transfer.*): strategies x inits x seeds
    T = P.transfer
    runs = 3 * len(T.inits) * len(T.seeds)
    add("06_transfer", f"LP / FT / LP-FT of {T.arch} (3 strategies x inits x seeds)", runs,
        _steps(N_TRAIN, T.batch_size, T.epochs), _timm(T.arch, num_classes=2), _images(T.batch_size, T.image_size))
    return out


def table(profile: str = "gpu") -> list[dict]:
    """One row per chapter: training TFLOPs, T4 minutes at 25 TFLOP/s, the largest step's fp16 activations."""
    rows = {}
    for j in jobs(profile):
        r = rows.setdefault(j.chapter, {"chapter": j.chapter, "pflop": 0.0, "t4_min": 0.0, "act_gb": 0.0, "jobs": []})
        r["pflop"] += j.total / 1e15
        r["t4_min"] += j.total / T4_FLOPS / 60
        r["act_gb"] = max(r["act_gb"], j.act_gb)
        r["jobs"].append(j)
    return list(rows.values())


CPU_BUDGET_MIN = {"03_mae": 10}  # the cpu profile's budget per chapter, first run on 2 cores (8 min otherwise)


def markdown(profile: str = "gpu") -> str:
    lines = ["| chapter | `cpu`, first run on 2 cores (budget) | `gpu` training compute (PFLOP) | "
             "T4 minutes at 25 TFLOP/s | peak activations (GB, fp16) |", "|---|---:|---:|---:|---:|"]
    for r in table(profile):
        lines.append(f"| {r['chapter']} | ≤ {CPU_BUDGET_MIN.get(r['chapter'], 8)} min | {r['pflop']:.1f} | "
                     f"{r['t4_min']:.1f} | {r['act_gb']:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    sys.path.insert(0, str(ROOT / "src"))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="gpu")
    ap.add_argument("--markdown", action="store_true", help="the table of book/instructors.md")
    args = ap.parse_args(argv)
    if args.markdown:
        print(markdown(args.profile))
        return 0
    for r in table(args.profile):
        print(f"{r['chapter']}: {r['pflop']:.2f} PFLOP, {r['t4_min']:.1f} T4-min, activations {r['act_gb']:.1f} GB")
        for j in r["jobs"]:
            print(f"    {j.what}: {j.runs} x {j.steps} steps x {j.flops / 1e12:.2f} TFLOP "
                  f"({j.act_gb:.1f} GB activations)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
