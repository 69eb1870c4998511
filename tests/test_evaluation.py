"""The shared evaluation protocol (chapter 1): probes on toy problems, metrics, feature cache."""
import numpy as np
import pandas as pd
import pytest
import torch

from helpers import evaluation
from helpers.data import ImageTable


def blobs(n=300, d=16, k=3, sep=6.0, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    centres = rng.normal(0, sep, (k, d))
    return centres[y] + rng.normal(0, 1, (n, d)), y


@pytest.mark.parametrize("probe", ["linear", "knn"])
def test_probes_separate_a_separable_problem_and_not_shuffled_labels(probe):
    x, y = blobs(n=1500)
    fn = (lambda *a: evaluation.linear_probe(*a)) if probe == "linear" else (lambda *a: evaluation.knn_probe(*a))
    good = fn(x[:1000], y[:1000], x[1000:], y[1000:], 3)
    assert good["balanced_accuracy"] > 0.97 and good["auroc"] > 0.99
    # shuffled training labels: each fit maps whole clusters to arbitrary classes, so single runs vary;
    # on average over permutations the probe is at chance
    rng = np.random.default_rng(1)
    runs = [fn(x[:1000], rng.permutation(y[:1000]), x[1000:], y[1000:], 3) for _ in range(8)]
    assert abs(np.mean([r["balanced_accuracy"] for r in runs]) - 1 / 3) < 0.08
    assert abs(np.mean([r["auroc"] for r in runs]) - 0.5) < 0.08


def test_metrics_for_ordinal_labels_and_missing_classes():
    y = np.array([0, 1, 2, 3, 4, 4])
    perfect = np.eye(5)[y]
    m = evaluation.metrics(y, perfect, ordinal=True)
    assert m["accuracy"] == m["balanced_accuracy"] == m["quadratic_kappa"] == 1.0 and m["auroc"] == 1.0
    off_by_one = np.eye(5)[np.clip(y + 1, 0, 4)]
    far = np.eye(5)[4 - y]
    assert evaluation.metrics(y, off_by_one, True)["quadratic_kappa"] > evaluation.metrics(y, far, True)["quadratic_kappa"]
    m = evaluation.metrics(np.array([0, 0, 2, 2]), np.eye(5)[[0, 0, 2, 2]])
    assert np.isfinite(m["auroc"])  # classes 1, 3, 4 absent from the test set


def test_features_are_extracted_once_and_cached(tmp_path):
    rng = np.random.default_rng(0)
    table = ImageTable(rng.integers(0, 255, (20, 16, 16, 3), dtype=np.uint8),
                       pd.DataFrame({"y": rng.integers(0, 2, 20), "split": ["train"] * 12 + ["valid"] * 4 + ["test"] * 4}),
                       name="toy")
    enc = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    f1 = evaluation.extract_features(enc, table, device="cpu", size=16, bs=5, folder=tmp_path)
    assert f1["train"].shape == (12, 4) and f1["test"].shape == (4, 4)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    with torch.no_grad():
        enc[0].weight.mul_(2)  # a different encoder: a different cache entry
    f2 = evaluation.extract_features(enc, table, device="cpu", size=16, bs=5, folder=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 2 and not np.allclose(f1["train"], f2["train"])
    f3 = evaluation.extract_features(enc, table, device="cpu", size=16, bs=5, folder=tmp_path)
    assert np.array_equal(f2["train"], f3["train"])
