"""Scaling out (book page "Scaling out"): several processes on the gloo backend, launched by torchrun.

Two processes with a batch of B each must train exactly like one process with
a batch of 2B: the same losses and the same weights after two SGD steps, for
SimCLR (negatives gathered from every process, batch norm over the global
batch) and DINO (centre averaged over processes, the EMA teacher the same on
every rank). Randomness is taken out: fixed views, no dropout, rank 0's data
order. Only rank 0 writes a checkpoint, and the chapter reads it back. A killed
or silent process ends the job with an error instead of a hang.

This file is also the worker script: ``torchrun ... tests/test_distributed.py worker OUT``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
B, STEPS, SIZE = 8, 2, 16  # per-process batch; SGD steps; image side
LR = {"simclr": 0.1, "dino": 0.01}  # constant learning rates (DINO's head moves fast)


def torchrun(args, timeout=120, nproc=2, env=None):
    """Run ``torchrun --nproc_per_node nproc ARGS`` on free localhost ports; ``(returncode, output, seconds)``."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--standalone",
           "--max-restarts", "0"] + list(args)
    e = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, env=e, capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout + p.stderr, time.perf_counter() - t0


# ---------------------------------------------------------------- the pieces both sides build

def fixed_views():
    """Deterministic 'views': the image, then its mirror image (the callback asks for two per batch)."""
    class Fixed(torch.nn.Module):
        calls = 0

        def forward(self, x):
            Fixed.calls += 1
            return x if Fixed.calls % 2 else x.flip(-1)
    return Fixed()


def fixed_multi_crop(x, n_local=2, **_):
    """Deterministic multi-crop: two global views (image, mirror) and two half-size corner crops."""
    import torch.nn.functional as F
    h = x.shape[-1] // 2
    glob = [x, x.flip(-1)]
    loc = [F.interpolate(x[..., :h, :h], size=h), F.interpolate(x[..., h:, h:], size=h)][:n_local]
    return glob, loc


def tiny_dls(global_bs):
    """2 steps of ``global_bs`` training images and one validation batch, shuffled by rank 0's seeded order."""
    import numpy as np
    import pandas as pd
    from helpers import data
    from helpers.table import ImageTable
    n_train, n_valid = STEPS * global_bs, global_bs
    rng = np.random.default_rng(0)
    images = (rng.random((n_train + n_valid, SIZE, SIZE, 3)) * 255).astype("uint8")
    labels = pd.DataFrame({"y": rng.integers(0, 2, n_train + n_valid),
                           "split": ["train"] * n_train + ["valid"] * n_valid})
    table = ImageTable(images, labels, tasks={"y": "single"})
    return data.dataloaders(table, None, bs=global_bs, size=SIZE, device="cpu", augment=False, normalize=False,
                            seed=0, splits=("train", "valid"))


class RawLoss:
    """Collects the raw training loss of every step (fastai's recorder keeps a smoothed one)."""

    def __new__(cls):
        from fastai.callback.core import Callback

        class _Raw(Callback):
            order = 95

            def before_fit(self):
                self.values = []

            def after_loss(self):
                if self.training:
                    self.values.append(float(self.learn.loss.detach()))
        return _Raw()


def tiny_learner(method, global_bs):
    """A SimCLR or DINO Learner on the book's small CNN (batch norm in the encoder, and in SimCLR's head), SGD."""
    from fastai.optimizer import SGD
    from helpers import env, models
    from helpers.methods import dino, simclr
    env.seed_everything(0)
    enc, _ = models.create_encoder("small_cnn_narrow")
    dls = tiny_dls(global_bs)
    if method == "simclr":
        learn = simclr.simclr_learner(dls, enc, proj_dim=16, hidden_dim=32, temperature=0.5, views=fixed_views())
    else:
        learn = dino.dino_learner(dls, enc, out_dim=64, hidden_dim=32, bottleneck_dim=16, n_local=2,
                                  momentum=0.9, warmup_epochs=0)
    learn.opt_func = SGD
    return learn


def train(method, global_bs):
    """Two SGD steps; the raw losses and the weights (student and, for DINO, teacher)."""
    from helpers import distributed
    from helpers.methods import dino
    learn = tiny_learner(method, global_bs)
    raw = RawLoss()
    real = dino.multi_crop
    dino.multi_crop = fixed_multi_crop  # the DINO callback builds its views with this name
    try:
        with distributed.trainer(learn), learn.no_bar(), learn.no_logging():
            learn.fit(1, LR[method], cbs=[raw])
    finally:
        dino.multi_crop = real
    model = distributed.unwrap(learn.model)
    out = {"losses": raw.values, "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}
    if method == "dino":
        out["center"] = learn.dino.center.clone()
    return out


# ---------------------------------------------------------------- the worker (one per process, under torchrun)

def worker(out: Path, mode: str):
    from helpers import distributed
    distributed.init(timeout_s=20 if mode == "equivalence" else 3)
    r = distributed.rank()
    if mode == "killed":  # rank 1 dies without a word in the middle of training
        for step in range(1000):
            if r == 1 and step == 3:
                os.kill(os.getpid(), 9)
            distributed.barrier()
            time.sleep(0.01)
    if mode == "silent":  # rank 1 stays alive but never joins the next collective: the timeout ends it
        distributed.barrier()
        if r == 1:
            time.sleep(300)
        distributed.barrier()
    res = {m: train(m, 2 * B) for m in ("simclr", "dino")}
    # the book's gathered NT-Xent against lightly's, with gradients, on 2 processes
    from lightly.loss import NTXentLoss
    from helpers.methods import simclr
    torch.manual_seed(10 + r)
    z1, z2 = torch.randn(B, 8, requires_grad=True), torch.randn(B, 8, requires_grad=True)
    ours = simclr.nt_xent_loss(z1, z2, 0.3, gather_distributed=True)
    g_ours = torch.autograd.grad(ours, (z1, z2))
    theirs = NTXentLoss(temperature=0.3, gather_distributed=True)(z1, z2)
    g_theirs = torch.autograd.grad(theirs, (z1, z2))
    res["lightly"] = {"loss": [float(ours), float(theirs)],
                      "grad": max(float((a - b).abs().max()) for a, b in zip(g_ours, g_theirs))}
    # only rank 0 writes the run (count the writes on each rank)
    from helpers import runs
    writes = []
    real = runs.save_weights
    runs.save_weights = lambda *a, **k: (writes.append(str(a[1])), real(*a, **k))[1]
    learn = tiny_learner("simclr", 2 * B)
    hist = runs.load_or_train(learn, "tiny", 2, 1e-2, name="simclr", folder=out / "ckpt", save_at=(1, 2), bar=False)
    res["writes"], res["world_size"] = writes, hist.get("world_size")
    runs.save_weights = real
    torch.save(res, out / f"rank{r}.pt")
    # the entry point, as `torchrun -m helpers.pretrain simclr ...` runs it (in this job: one start-up less)
    from helpers import pretrain
    pretrain.main(["simclr", "--profile", "smoke", "--epochs", "1", "--seeds", "0"])  # leaves the group at the end


# ---------------------------------------------------------------- the tests

@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """One torchrun job of 2 processes (gloo) runs every distributed check; its folder, results per rank, log."""
    pytest.importorskip("accelerate")
    out = tmp_path_factory.mktemp("ddp")
    env = {"RETINA_CACHE": str(out / "cache"), "RETINA_DATA": str(out / "data")}
    code, log, _ = torchrun([__file__, "worker", str(out), "equivalence"], env=env, timeout=240)
    assert code == 0, log[-4000:]
    return out, [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)], log


@pytest.mark.parametrize("method", ["simclr", "dino"])
def test_two_processes_of_b_train_like_one_process_of_2b(two_processes, method):
    _, ranks, _ = two_processes
    one = train(method, 2 * B)                           # the reference: one process, the whole batch
    two = [r[method] for r in ranks]
    assert len(one["losses"]) == STEPS == len(two[0]["losses"]) == len(two[1]["losses"])
    mean = [(a + b) / 2 for a, b in zip(two[0]["losses"], two[1]["losses"])]
    assert mean == pytest.approx(one["losses"], abs=1e-5), (mean, one["losses"])
    diff = max(float((two[0]["state"][k].float() - v.float()).abs().max()) for k, v in one["state"].items())
    for k, v in one["state"].items():
        # float32 sums in another order: the rounding error scales with the largest value summed, so each
        # tensor is compared at 1e-5 of its own largest magnitude (DINO's head bias reaches ~7 after two steps,
        # and a near-zero element of it once differed by 1.4e-5). A wrong reduction differs by a whole update.
        scale = max(1.0, float(v.float().abs().max()))
        err = float((two[0]["state"][k].float() - v.float()).abs().max())
        assert err <= 1e-5 * scale, f"{method}: {k} differs after {STEPS} steps by {err:.2e} (scale {scale:.2f})"
    # every rank holds the same weights (the DINO teacher included: it follows the same student)
    for k, v in two[0]["state"].items():
        assert torch.equal(v, two[1]["state"][k]), k
    if method == "dino":
        assert torch.allclose(two[0]["center"], one["center"], atol=1e-6)
        assert torch.equal(two[0]["center"], two[1]["center"])
    print(f"{method}: losses 1x2B {one['losses']} vs 2xB {mean}; max weight difference {diff:.2e}")


def test_gathered_nt_xent_equals_lightly_on_two_processes(two_processes):
    _, ranks, _ = two_processes
    for r in ranks:
        ours, theirs = r["lightly"]["loss"]
        assert ours == pytest.approx(theirs, abs=1e-5) and r["lightly"]["grad"] < 1e-6


@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_gathered_nt_xent_equals_lightly_in_one_process(batch, temperature):
    from lightly.loss import NTXentLoss
    from helpers.methods import simclr
    torch.manual_seed(batch)
    z1, z2 = torch.randn(batch, 16), torch.randn(batch, 16)
    ours = simclr.nt_xent_loss(z1, z2, temperature, gather_distributed=True)
    theirs = NTXentLoss(temperature=temperature, gather_distributed=True)(z1, z2)
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert torch.allclose(ours, simclr.nt_xent_loss(z1, z2, temperature), atol=1e-6)


def test_only_rank_0_writes_and_the_chapter_reads_the_run_back(two_processes):
    out, ranks, _ = two_processes
    assert len(ranks[0]["writes"]) == 2 and ranks[1]["writes"] == []  # epoch 1, then the run itself
    assert ranks[0]["world_size"] == ranks[1]["world_size"] == 2
    files = sorted(p.name for p in (out / "ckpt").iterdir() if not p.name.endswith(".lock"))
    assert files == ["simclr-tiny-e001.safetensors", "simclr-tiny.safetensors"], files  # no temporary left
    from helpers import runs
    hist = runs.load_or_train(tiny_learner("simclr", 2 * B), "tiny", 2, 1e-2, name="simclr", folder=out / "ckpt",
                              save_at=(1, 2), bar=False)
    assert hist["loaded"] and hist["world_size"] == 2 and sorted(hist["checkpoints"]) == [1, 2]


def test_global_batchnorm_is_batchnorm_in_one_process():
    from torch import nn
    from helpers import distributed
    torch.manual_seed(0)
    bn = nn.Sequential(nn.BatchNorm2d(3))
    ref = nn.BatchNorm2d(3)
    ref.load_state_dict(bn[0].state_dict())
    g = distributed.sync_batchnorm(bn)
    assert isinstance(g[0], distributed.GlobalBatchNorm) and set(g[0].state_dict()) == set(ref.state_dict())
    x = torch.randn(6, 3, 4, 4)
    assert torch.allclose(g(x), ref(x), atol=1e-6)
    assert torch.allclose(g[0].running_var, ref.running_var)


@pytest.mark.parametrize("mode", ["killed", "silent"])
def test_a_lost_process_ends_the_job_with_a_message(tmp_path, mode):
    code, log, secs = torchrun([__file__, "worker", str(tmp_path), mode], timeout=90)
    assert code != 0 and secs < 45, (code, secs, log[-2000:])
    if mode == "killed":
        assert "Signal 9" in log or "SIGKILL" in log, log[-2000:]
    else:
        assert "rank: 0" in log and ("timed out" in log.lower() or "timeout" in log.lower()), log[-3000:]


def test_pretrain_entry_point_writes_the_run_the_chapter_loads(two_processes):
    out, _, log = two_processes
    assert "global batch 32 = 16 per process" in log and "simclr seed 0: trained" in log
    saved = [p for p in (out / "cache" / "checkpoints").iterdir() if p.suffix == ".safetensors"]
    assert len(saved) == 1, saved  # written once, by rank 0 (the save_at epoch 1 is the run itself)
    env = {"RETINA_CACHE": str(out / "cache"), "RETINA_DATA": str(out / "data")}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:  # chapter 1's own calls, with the same knobs: it finds the run instead of training
        from helpers import chapters, profiles
        from helpers.chapters import ch01
        P = profiles.load("smoke")
        K = P.simclr
        table = chapters.chapter_table(P, K.image_size)
        _, hist = ch01.pretrain(table, K, 0, "cpu", epochs=1, save_at=K.save_at, bar=False)
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    assert hist["loaded"] and hist["world_size"] == 2


def test_time_to_accuracy_benchmark_runs_quick(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RETINA_CACHE": str(tmp_path / "cache")}
    p = subprocess.run([sys.executable, str(ROOT / "tests" / "benchmarks" / "time_to_accuracy.py"), "--quick",
                        "--out", str(tmp_path / "tta.jsonl")], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    row = json.loads((tmp_path / "tta.jsonl").read_text().splitlines()[-1])
    assert row["ours"]["seconds"] > 0 and row["lightly"]["seconds"] > 0 and row["ratio"] > 0
    assert "ratio" in p.stdout


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "worker":
    sys.path.insert(0, str(ROOT / "tests"))
    worker(Path(sys.argv[2]), sys.argv[3])
