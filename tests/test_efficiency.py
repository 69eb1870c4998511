"""The cost table of chapter 3: parameters, embedding size, speed, probe time and peak memory, measured."""
import numpy as np
import pandas as pd
import torch

from helpers import efficiency
from helpers.models import small_vit
from helpers.table import ImageTable


def test_measure_counts_parameters_and_embedding_and_sees_a_bigger_model_cost_more():
    small = efficiency.measure(lambda: small_vit(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2), 32,
                               n_images=8, bs=4)
    big = efficiency.measure(lambda: small_vit(img_size=32, patch_size=4, embed_dim=256, depth=4, num_heads=4), 32,
                             n_images=8, bs=4)
    vit = small_vit(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2)
    assert small["parameters_M"] == sum(p.numel() for p in vit.parameters()) / 1e6
    assert small["embedding"] == 32 and big["embedding"] == 256
    assert small["weights_MB"] == small["parameters_M"] * 1e6 * 4 / 2 ** 20
    assert big["images_per_s"] < small["images_per_s"]
    # sampled RSS on a CPU: memory the allocator already holds is not counted again, so only a lower bound
    assert np.isfinite(big["peak_memory_MB"]) and big["peak_memory_MB"] >= 0


def test_probe_seconds_times_the_shared_probe_on_embeddings_of_that_size():
    rng = np.random.default_rng(0)
    labels = pd.DataFrame({"y": rng.integers(0, 3, 300), "split": ["train"] * 200 + ["valid"] * 50 + ["test"] * 50})
    table = ImageTable(np.zeros((300, 4, 4, 3), np.uint8), labels, tasks={"y": "single"})
    small, big = efficiency.probe_seconds(8, table, "y"), efficiency.probe_seconds(512, table, "y")
    assert 0 < small < 60 and 0 < big < 60


def test_machine_description_keys_the_cached_table():
    a, b = efficiency.machine("cpu"), efficiency.machine("cpu")
    assert a == b and set(a) == {"cpu", "threads", "torch", "accelerator"}
    assert a["accelerator"] == "cpu" and a["threads"] == torch.get_num_threads() and a["cpu"]


def test_mfu_benchmark_counts_the_mae_step_and_divides_by_the_peak(tmp_path):
    import importlib.util
    import json
    from pathlib import Path
    path = Path(__file__).parent / "benchmarks" / "mfu_mae.py"
    spec = importlib.util.spec_from_file_location("mfu_mae", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "mfu.jsonl"
    row = bench.main(["--quick", "--out", str(out), "--peak-tflops", "2.0"])
    assert json.loads(out.read_text().splitlines()[-1]) == row
    assert row["precision"] == "fp32" and row["flops_per_step"] > 0
    assert abs(row["mfu"] - row["achieved_tflops"] / 2.0) < 1e-3
    # the count is the step's: twice the images, twice the FLOPs (the visible tokens per image are fixed)
    twice = bench.measure(bench.argparse.Namespace(
        arch="vit_tiny_patch16_224", size=64, bs=8, mask_ratio=0.75, decoder_dim=32, decoder_depth=1,
        decoder_heads=2, precision="auto", compile=False, steps=1, warmup=0, peak_tflops=None, device="cpu", seed=0,
        quick=True))
    assert twice["flops_per_step"] == 2 * row["flops_per_step"] and twice["mfu"] is None  # no known CPU peak
