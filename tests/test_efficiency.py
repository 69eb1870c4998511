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
