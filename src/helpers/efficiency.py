"""What a foundation model costs to use: parameters, embedding size, images per second, probe time, peak memory.

Chapter 3 ("MAE and RETFound") measures RETFound (ViT-L/16) beside RETFound-Green (ViT-S/14 with registers) and
the book's own ViT, side by side on the machine that runs the chapter — relative costs are what carry over from
one machine to another, absolute ones do not::

    row = efficiency.measure(encoder, size=224, n_images=8, device=device)
    row["probe_seconds"] = efficiency.probe_seconds(row["embedding"], table, "dr_grade")

Peak memory is ``torch.cuda.max_memory_allocated`` above what was allocated before, on a GPU; on a CPU, the rise of
the process's resident memory, sampled every millisecond from building the model to the end of inference (weights
included, as on the GPU) — a lower bound, since memory the allocator already holds is not counted again.
"""
from __future__ import annotations

import ctypes
import gc
import os
import platform
import sys
import threading
import time

import numpy as np
import psutil
import torch

from .evaluation import linear_probe


def _trim() -> None:
    """glibc's ``malloc_trim(0)``: return the freed heap to the system (nothing elsewhere)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class _PeakRSS:
    """The largest resident set size of this process while the block runs, sampled by a thread."""

    def __enter__(self):
        gc.collect()
        _trim()  # hand memory freed by an earlier model back to the system, so this one's shows again
        self.proc, self.stop = psutil.Process(), threading.Event()
        self.base = self.peak = self.proc.memory_info().rss
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.001)

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


@torch.no_grad()
def measure(make_encoder, size: int, n_images: int = 8, bs: int = 4, device=None, repeats: int = 2) -> dict:
    """Build ``make_encoder()`` and time inference on ``n_images`` random images of ``size`` px.

    Returns parameters (millions), embedding size, weights on disk in float32 (MB), images per second (the best
    of ``repeats`` timed passes after one warm-up batch) and peak memory (MB) from building the model to the end
    of inference. Random inputs: speed and memory do not depend on what the pixels show.
    """
    device = torch.device(device or "cpu")
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    watch = _PeakRSS() if not cuda else None
    if watch:
        watch.__enter__()
    try:
        model = make_encoder().to(device).eval()
        x = torch.rand(min(bs, n_images), 3, size, size, device=device)
        with torch.autocast(device_type=device.type, enabled=cuda):
            dim = int(model(x[:1]).shape[-1])  # warm-up
            best = float("inf")
            for _ in range(repeats):
                if cuda:
                    torch.cuda.synchronize(device)
                t0 = time.perf_counter()
                for _ in range(0, n_images, len(x)):
                    model(x)
                if cuda:
                    torch.cuda.synchronize(device)
                best = min(best, time.perf_counter() - t0)
    finally:
        if watch:
            watch.__exit__(None, None, None)
    n_batches = -(-n_images // len(x))
    params = sum(p.numel() for p in model.parameters())
    peak = (torch.cuda.max_memory_allocated(device) - base) if cuda else (watch.peak - watch.base)
    return {"parameters_M": params / 1e6, "embedding": dim, "weights_MB": params * 4 / 2 ** 20, "input_px": size,
            "images_per_s": n_batches * len(x) / best, "peak_memory_MB": peak / 2 ** 20}


def machine(device=None) -> dict:
    """What the measurements depend on: processor, threads, accelerator and torch version (keys chapter 3's cache
    of the efficiency table, so a warm run reads the table measured on this machine instead of measuring again)."""
    device = torch.device(device or "cpu")
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "accelerator": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type}


def describe_machine(device=None) -> str:
    """:func:`machine` in words, plus the core count: what a reference run or a measured time names."""
    m = machine(device)
    return (f"{m['accelerator']} ({m['cpu']}, {m['threads']} threads), {os.cpu_count()} CPU cores, "
            f"Python {sys.version.split()[0]}, torch {m['torch']}")


def probe_seconds(dim: int, table, task: str, seed: int = 0, max_iter: int = 1000) -> float:
    """Seconds to fit the shared linear probe on embeddings of size ``dim`` for every training image of ``table``.

    The embeddings are random (Gaussian): the probe's cost depends on their number and size, which is what the
    comparison needs, not on the model that made them.
    """
    rng = np.random.default_rng(seed)
    y = table.target(task)
    tr, te = table.split_index("train"), table.split_index("test")
    xtr, xte = rng.standard_normal((len(tr), dim), np.float32), rng.standard_normal((len(te), dim), np.float32)
    t0 = time.perf_counter()
    linear_probe(xtr, y[tr], xte, y[te], table.n_classes(task), max_iter=max_iter)
    return time.perf_counter() - t0
