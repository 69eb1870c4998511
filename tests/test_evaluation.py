"""The shared evaluation protocol (chapter 1): probes on toy problems, metrics, feature cache."""
import numpy as np
import pandas as pd
import pytest
import torch

from helpers import evaluation, frechet
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


def test_the_feature_cache_key_sees_every_image_and_label(tmp_path):
    rng = np.random.default_rng(0)
    labels = pd.DataFrame({"y": rng.integers(0, 2, 20), "split": ["train"] * 12 + ["valid"] * 4 + ["test"] * 4})
    images = rng.integers(0, 255, (20, 16, 16, 3), dtype=np.uint8)
    table = ImageTable(images, labels, name="toy")
    enc = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    f1 = evaluation.extract_features(enc, table, device="cpu", size=16, folder=tmp_path)
    changed = images.copy()
    changed[-1, 5, 5, 0] ^= 0xFF  # one pixel of the last test image (beyond any prefix of the array)
    t2 = ImageTable(changed, labels, name="toy")
    assert t2.fingerprint() != table.fingerprint()
    f2 = evaluation.extract_features(enc, t2, device="cpu", size=16, folder=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 2
    assert not np.allclose(f1["test"][-1], f2["test"][-1]) and np.allclose(f1["train"], f2["train"])
    relabelled = labels.copy()
    relabelled.loc[0, "y"] = 1 - relabelled.loc[0, "y"]
    assert ImageTable(images, relabelled, name="toy").fingerprint() != table.fingerprint()


RACE = """
import sys, numpy as np, pandas as pd, torch
from helpers import evaluation
from helpers.table import ImageTable
rng = np.random.default_rng(0)
table = ImageTable(rng.integers(0, 255, (40, 16, 16, 3), dtype=np.uint8),
                   pd.DataFrame({"y": rng.integers(0, 2, 40), "split": ["train"] * 24 + ["valid"] * 8 + ["test"] * 8}))
torch.manual_seed(0)
enc = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
f = evaluation.extract_features(enc, table, device="cpu", size=16, folder=sys.argv[1])
print(float(f["train"].sum()))
"""


def test_two_processes_building_the_same_features_both_succeed(tmp_path):
    import os
    import subprocess
    import sys
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", RACE, str(tmp_path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e[-1500:] for _, e in outs]
    assert len({o.strip().splitlines()[-1] for o, _ in outs}) == 1
    assert len(list(tmp_path.glob("*.npz"))) == 1 and not list(tmp_path.glob("*.tmp"))


def test_frechet_distance_equals_the_formula_on_the_encoders_features():
    import scipy.linalg
    import torch
    from helpers.frechet import frechet_distance
    from helpers.views import FUNDUS_MEAN, FUNDUS_STD

    class Enc(torch.nn.Module):
        num_features = 6

        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 6, 3, stride=2)

        def forward(self, x):
            return self.conv(x).relu().mean((2, 3))

    torch.manual_seed(0)
    enc = Enc()
    real, fake = torch.rand(200, 3, 16, 16), (torch.rand(150, 3, 16, 16) * 0.6 + 0.2)
    norm = lambda x: (x - torch.tensor(FUNDUS_MEAN).view(1, 3, 1, 1)) / torch.tensor(FUNDUS_STD).view(1, 3, 1, 1)  # noqa: E731
    with torch.no_grad():
        fr, ff = enc(norm(real)).double().numpy(), enc(norm(fake)).double().numpy()
    m1, m2 = fr.mean(0), ff.mean(0)
    s1, s2 = np.cov(fr, rowvar=False), np.cov(ff, rowvar=False)
    want = float(((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real))
    got = frechet_distance(enc, real, fake, bs=64)
    assert got == pytest.approx(want, rel=1e-3)
    assert abs(frechet_distance(enc, real, real)) < 1e-6 < got
    assert enc.training  # the encoder's mode is restored


def test_shots_subset_takes_k_per_class_and_is_seeded():
    y = np.array([0] * 30 + [1] * 3 + [2] * 20)
    sub = evaluation.shots_subset(y, 5, seed=0)
    assert list(np.bincount(y[sub])) == [5, 3, 5]  # a class with fewer gives all it has
    assert np.array_equal(sub, evaluation.shots_subset(y, 5, seed=0))
    assert not np.array_equal(sub, evaluation.shots_subset(y, 5, seed=1))
    with pytest.raises(ValueError, match="at least 1"):
        evaluation.shots_subset(y, 0, seed=0)


def test_metrics_include_the_transfer_studys_kappa_f1_sensitivity_and_specificity():
    from sklearn.metrics import cohen_kappa_score, f1_score
    y = np.array([0, 0, 0, 1, 1, 1, 1, 0])
    p = np.array([[.9, .1], [.6, .4], [.3, .7], [.2, .8], [.4, .6], [.7, .3], [.1, .9], [.8, .2]])
    m = evaluation.metrics(y, p)
    pred = p.argmax(1)
    assert m["kappa"] == pytest.approx(cohen_kappa_score(y, pred)) and m["f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert m["sensitivity"] == pytest.approx(3 / 4) and m["specificity"] == pytest.approx(3 / 4)
    assert "specificity" not in evaluation.metrics(np.array([0, 1, 2]), np.eye(3))


def test_frechet_difference_matches_torchmetrics_and_sees_a_shift():
    import torch
    from helpers import evaluation, models
    torch.manual_seed(0)
    enc = models.create_encoder("small_cnn_narrow")[0].eval()
    real, same, shifted = torch.rand(96, 3, 32, 32), torch.rand(96, 3, 32, 32), torch.rand(96, 3, 32, 32) * 0.6
    d = frechet.frechet_difference(enc, real, shifted, same, n_boot=100)
    assert abs(d["a"] - frechet.frechet_distance(enc, real, shifted)) < 1e-3 * max(1.0, d["a"])
    assert abs(d["b"] - frechet.frechet_distance(enc, real, same)) < 1e-3 * max(1.0, d["b"])
    assert d["diff"] > 0 and d["lo"] > 0 and d["lo"] <= d["diff"] <= d["hi"]
    twin = frechet.frechet_difference(enc, real, same, same.flip(0), n_boot=100)
    assert twin["lo"] < 0 < twin["hi"]  # the same set twice: no difference to find
