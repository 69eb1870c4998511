"""The multi-task, label-fraction, multi-seed protocol of chapter 1 (helpers.evaluation, helpers.transfer)."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats
import torch

from helpers import evaluation, transfer
from helpers.table import ImageTable


def toy_world(n_train=600, n_test=300, d=12, seed=0):
    """Two tasks whose classes are separable in the toy features, plus a table to hold the labels."""
    rng = np.random.default_rng(seed)
    n = n_train + 100 + n_test
    labels = pd.DataFrame({"grade": rng.integers(0, 5, n), "flag": rng.integers(0, 2, n),
                           "split": ["train"] * n_train + ["valid"] * 100 + ["test"] * n_test})
    table = ImageTable(np.zeros((n, 4, 4, 3), np.uint8), labels, tasks={"grade": "ordinal", "flag": "single"})
    centres = rng.normal(0, 4, (5, d))
    x = centres[labels["grade"]] + rng.normal(0, 1, (n, d))
    x[:, 0] += 6 * labels["flag"].to_numpy()
    split = labels["split"].to_numpy()
    feats = {s: x[split == s] for s in ("train", "valid", "test")}
    return table, feats


def test_protocol_separable_features_score_high_and_degrade_gracefully_with_fewer_labels():
    table, feats = toy_world()
    df = evaluation.protocol({"toy": {0: feats, 1: feats}}, table, ["grade", "flag"], fractions=(0.02, 0.1, 1.0))
    assert len(df) == 2 * 2 * 3 * 2  # seeds x tasks x fractions x probes
    full = df[(df.fraction == 1.0) & (df.probe == "linear")]
    assert (full["balanced_accuracy"] > 0.95).all()
    few = df[(df.fraction == 0.02) & (df.probe == "linear") & (df.task == "grade")]
    assert (few["balanced_accuracy"] > 0.6).all()  # 12 labelled images, still far above chance (0.2)
    assert {"quadratic_kappa", "auroc"} <= set(df.columns)


def test_protocol_is_at_chance_when_the_training_labels_are_shuffled():
    table, feats = toy_world()
    rng = np.random.default_rng(3)
    scores = []
    for _ in range(6):
        shuffled = table.labels.copy()
        tr = shuffled["split"] == "train"
        shuffled.loc[tr, "grade"] = rng.permutation(shuffled.loc[tr, "grade"].to_numpy())
        t = ImageTable(table.images, shuffled, table.tasks)
        df = evaluation.protocol({"toy": {0: feats}}, t, ["grade"], fractions=(1.0,), probes=("linear",))
        scores.append(float(df["balanced_accuracy"].iloc[0]))
    assert abs(np.mean(scores) - 0.2) < 0.06


def test_label_subset_is_stratified_seeded_and_keeps_every_class():
    y = np.repeat(np.arange(5), [400, 300, 200, 80, 20])
    sub = evaluation.label_subset(y, 0.01, seed=0)
    assert set(y[sub]) == set(range(5))  # the rarest class keeps one image
    assert np.array_equal(sub, evaluation.label_subset(y, 0.01, seed=0))
    assert not np.array_equal(evaluation.label_subset(y, 0.1, 0), evaluation.label_subset(y, 0.1, 1))
    counts = np.bincount(y[evaluation.label_subset(y, 0.1, 0)])
    assert counts.tolist() == [40, 30, 20, 8, 2]
    assert len(evaluation.label_subset(y, 1.0, 0)) == len(y)
    with pytest.raises(ValueError, match="fraction"):
        evaluation.label_subset(y, 0.0, 0)


def test_interval_and_paired_gain():
    from scipy import stats
    v = [0.30, 0.34, 0.32]
    iv = evaluation.interval(v)
    half = stats.t.ppf(0.975, 2) * np.std(v, ddof=1) / np.sqrt(3)
    assert iv["mean"] == pytest.approx(0.32) and iv["hi"] - iv["mean"] == pytest.approx(half)
    df = pd.DataFrame([{"encoder": e, "seed": s, "task": "t", "fraction": 1.0, "probe": "linear",
                        "balanced_accuracy": b}
                       for e, vals in {"A": [0.5, 0.6, 0.7], "B": [0.4, 0.5, 0.6]}.items()
                       for s, b in enumerate(vals)])
    g = evaluation.paired_gain(df, "A", "B").iloc[0]
    assert g["mean"] == pytest.approx(0.1) and g["sd"] == pytest.approx(0.0, abs=1e-12)  # paired: no spread
    s = evaluation.summarise(df)
    assert set(s["encoder"]) == {"A", "B"} and (s["n"] == 3).all()


def test_seeds_to_decide_is_the_first_n_whose_interval_clears_the_threshold():
    """Issue 26: an undecided seed study says how many seeds would decide it at the measured mean and spread."""
    iv = evaluation.interval([-0.012, -0.006, -0.009])  # a 1-point margin: mean -0.9, sd 0.3 points
    n = evaluation.seeds_to_decide(iv, -0.01)
    assert n is not None and n > 3
    at = lambda k: iv["mean"] + np.array([-1, 1]) * stats.t.ppf(0.975, k - 1) * iv["sd"] / np.sqrt(k)  # noqa: E731
    lo, hi = at(n)
    assert lo > -0.01 and at(n - 1)[0] <= -0.01  # n clears the margin, n - 1 does not
    assert evaluation.seeds_to_decide({**iv, "mean": -0.01}, -0.01) is None  # on the threshold: no n decides
    assert evaluation.seeds_to_decide(evaluation.interval([0.5]), 0.0) is None  # one seed: no spread known
    assert evaluation.seeds_to_decide(iv, -0.0091, most=50) is None  # beyond the cap


def test_multitask_fine_tuning_learns_every_task_and_keeps_the_test_split():
    from helpers.models import SmallCNN
    rng = np.random.default_rng(0)
    n = 240
    a, b = rng.integers(0, 3, n), rng.integers(0, 2, n)
    images = np.zeros((n, 16, 16, 3), np.uint8)
    images[..., 0] = (a * 100)[:, None, None]  # task a in the red channel
    images[..., 2] = (b * 200)[:, None, None]  # task b in the blue channel
    labels = pd.DataFrame({"a": a, "b": b, "split": ["train"] * 160 + ["valid"] * 40 + ["test"] * 40})
    table = ImageTable(images, labels, tasks={"a": "single", "b": "single"})
    torch.manual_seed(0)
    res = transfer.fine_tune(SmallCNN(widths=(8, 16)), table, ["a", "b"], fraction=1.0, epochs=4, min_steps=40,
                             bs=16, size=16, device="cpu", lr=1e-2)
    assert res["a"]["balanced_accuracy"] > 0.9 and res["b"]["balanced_accuracy"] > 0.9
    assert res["_epochs"] >= 4
    # with 10 % of the labels the run still takes at least min_steps steps
    res = transfer.fine_tune(SmallCNN(widths=(8, 16)), table, ["a", "b"], fraction=0.1, epochs=1, min_steps=20,
                             bs=16, size=16, device="cpu")
    assert res["_epochs"] >= 20


def test_classifier_and_splitter_freeze_the_encoder_only():
    from fastai.learner import Learner
    from helpers import data
    from helpers.models import SmallCNN
    table, _ = toy_world(60, 20)
    model = transfer.classifier(SmallCNN(widths=(8,)), [5, 2])
    dls = data.dataloaders(table, ["grade", "flag"], bs=8, size=4, device="cpu")
    learn = Learner(dls, model, loss_func=transfer.MultiTaskLoss([5, 2]), splitter=transfer.two_groups)
    learn.freeze()
    conv = model[0].features[0].weight
    assert not conv.requires_grad and model[1].weight.requires_grad
    xb, yb = dls.one_batch()
    assert yb.shape == (8, 2) and model(xb).shape == (8, 7)


def test_bootstrap_difference_matches_the_probes_and_brackets_zero_for_equal_encoders():
    table, feats = toy_world()
    noisy = {k: v + np.random.default_rng(1).normal(0, 3, v.shape) for k, v in feats.items()}
    df = evaluation.bootstrap_difference(feats, noisy, table, ["grade", "flag"], n_boot=300)
    full = evaluation.protocol({"a": {0: feats}, "b": {0: noisy}}, table, ["grade", "flag"], probes=("linear",))
    assert df["task"].tolist() == ["grade", "flag", "mean"]
    assert df.iloc[-1]["diff"] == pytest.approx(df.iloc[:2]["diff"].mean())
    for _, r in df.iloc[:2].iterrows():
        a = full[(full.encoder == "a") & (full.task == r.task)]["balanced_accuracy"].item()
        b = full[(full.encoder == "b") & (full.task == r.task)]["balanced_accuracy"].item()
        assert r["a"] == pytest.approx(a) and r["b"] == pytest.approx(b)
        assert r["lo"] <= r["diff"] <= r["hi"]
    assert (df["lo"] > 0).all()  # the clean features are better, and the interval says so
    same = evaluation.bootstrap_difference(feats, feats, table, ["grade"], n_boot=200).iloc[0]
    assert same["diff"] == 0 and same["lo"] == 0 == same["hi"]


def test_retfound_recipe_fine_tunes_a_vit_with_layer_decay_and_label_smoothing():
    from helpers.models import small_vit
    rng = np.random.default_rng(0)
    n = 240
    a = rng.integers(0, 2, n)
    images = np.zeros((n, 16, 16, 3), np.uint8)
    images[..., 0] = (a * 200)[:, None, None]
    labels = pd.DataFrame({"a": a, "split": ["train"] * 160 + ["valid"] * 40 + ["test"] * 40})
    table = ImageTable(images, labels, tasks={"a": "single"})
    torch.manual_seed(0)
    vit = small_vit(img_size=16, patch_size=4, embed_dim=16, depth=2, num_heads=2, global_pool="avg")
    first = vit.patch_embed.proj.weight.detach().clone()
    res = transfer.fine_tune(vit, table, ["a"], epochs=4, min_steps=40, bs=16, size=16, device="cpu", lr=3e-3,
                             layer_decay=0.65, label_smoothing=0.1, warmup=0.2, wd=0.05)
    assert res["a"]["balanced_accuracy"] > 0.9
    assert not torch.equal(first, vit.patch_embed.proj.weight)  # no frozen phase: every layer trains
    logits, y = torch.tensor([[4.0, -4.0], [-4.0, 4.0]]), torch.tensor([0, 1])
    plain, smooth = transfer.MultiTaskLoss([2])(logits, y), transfer.MultiTaskLoss([2], 0.1)(logits, y)
    assert torch.isclose(smooth, torch.nn.functional.cross_entropy(logits, y, label_smoothing=0.1))
    assert smooth > plain  # confident right answers pay for the smoothing


def test_a_trained_classifier_is_kept_and_predicts_every_task(tmp_path, monkeypatch):
    monkeypatch.setenv("RETINA_CACHE", str(tmp_path))
    rng = np.random.default_rng(1)
    n = 240
    a, b = rng.integers(0, 3, n), rng.integers(0, 2, n)
    images = np.zeros((n, 16, 16, 3), np.uint8)
    images[np.arange(n), :, :, a] = 200                          # task a: which channel is lit (kept by brightness)
    images[b == 1, ::2] //= 4                                      # task b: stripes
    labels = pd.DataFrame({"a": a, "b": b, "split": ["train"] * 160 + ["valid"] * 40 + ["test"] * 40})
    table = ImageTable(images, labels, tasks={"a": "single", "b": "single"})
    model = transfer.train_classifier(table, ["a", "b"], arch="small_cnn_narrow", epochs=10, lr=1e-2, bs=16, size=16)
    x = torch.from_numpy(images[200:]).permute(0, 3, 1, 2).float() / 255
    pa, pb = transfer.predict(model, x, [3, 2])
    assert pa.shape == (40, 3) and pb.shape == (40, 2) and np.allclose(pa.sum(1), 1, atol=1e-5)
    assert (pa.argmax(1) == a[200:]).mean() > 0.9 and (pb.argmax(1) == b[200:]).mean() > 0.9
    again = transfer.train_classifier(table, ["a", "b"], arch="small_cnn_narrow", epochs=10, lr=1e-2, bs=16, size=16)
    assert all(torch.equal(p, q) for p, q in zip(model.state_dict().values(), again.state_dict().values()))
