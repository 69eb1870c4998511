"""Benchmark: SynthRetina images per second on ONE CPU core, at 128 and 512 px.

Run:  .venv/bin/python tests/benchmarks/benchmark_synthretina.py
Targets (issue 3): >= 200 images/s at 128 px and >= 20 images/s at 512 px.
"""
import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

import platform  # noqa: E402
import time  # noqa: E402

from helpers import synthretina  # noqa: E402


def bench(size: int, n: int, repeats: int = 3) -> float:
    synthretina.sample(0, 0, size)  # warm-up (grids, interpolation matrices)
    best = 0.0
    for r in range(repeats):
        t = time.perf_counter()
        for i in range(n):
            synthretina.sample(r * n + i, seed=0, size=size)
        best = max(best, n / (time.perf_counter() - t))
    return best


if __name__ == "__main__":
    print(f"SynthRetina benchmark on one core of {platform.processor() or platform.machine()} "
          f"(affinity {sorted(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'})")
    for size, n, target in ((128, 300, 200), (512, 40, 20)):
        rate = bench(size, n)
        print(f"{size:4d} px: {rate:7.1f} images/s (target >= {target}: {'met' if rate >= target else 'NOT met'})")
