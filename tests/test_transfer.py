"""Chapter 6's LP / FT / LP-FT recipes: the probe folded into a layer, LP that leaves the encoder alone, distortion."""
import copy

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import transfer
from helpers.models import SmallCNN
from helpers.table import ImageTable


@pytest.mark.parametrize("n_classes,present", [(2, [0, 1]), (4, [0, 1, 2, 3]), (5, [0, 2, 3])])
def test_probe_layer_reproduces_the_probes_probabilities(n_classes, present):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 7)) * rng.uniform(0.5, 5, 7) + rng.normal(size=7)
    y = np.array(present)[rng.integers(0, len(present), 200)]
    x[np.arange(200), y % 7] += 2.0  # something to learn
    clf = transfer.fit_probe(x, y)
    layer = transfer.probe_layer(clf, n_classes)
    with torch.no_grad():
        p = layer(torch.from_numpy(x).float()).softmax(1).double().numpy()
    want = np.zeros((200, n_classes))
    want[:, clf[-1].classes_] = clf.predict_proba(x)
    assert np.allclose(p, want, atol=1e-6)
    assert layer.weight.shape == (n_classes, 7)


def toy_table(n=240, size=16, seed=0):
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, 3, n), rng.integers(0, 2, n)
    images = rng.integers(0, 40, (n, size, size, 3)).astype(np.uint8)
    images[np.arange(n), :, :, a] += 150
    images[b == 1, ::2] //= 3
    labels = pd.DataFrame({"a": a, "b": b, "split": ["train"] * 160 + ["valid"] * 40 + ["test"] * 40})
    return ImageTable(images, labels, tasks={"a": "single", "b": "single"})


def test_lp_leaves_the_encoder_bit_identical_and_predicts_as_the_probe(tmp_path, monkeypatch):
    from helpers.evaluation import extract_features
    monkeypatch.setenv("RETINA_CACHE", str(tmp_path))
    table = toy_table()
    torch.manual_seed(0)
    enc = SmallCNN(widths=(8, 16))
    enc.train()(torch.rand(8, 3, 16, 16))  # move the BatchNorm statistics away from their init
    before = copy.deepcopy(enc.state_dict())
    model = transfer.strategy(enc, table, ["a", "b"], "lp", size=16)
    after = model[0].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BatchNorm statistics untouched
    # LP-FT starts from exactly this head: its predictions are the sklearn probes'
    f = extract_features(enc, table, size=16)
    x = torch.from_numpy(table.images[table.split_index("test")]).permute(0, 3, 1, 2).float() / 255
    pa, pb = transfer.predict(model, x, [3, 2])
    tr = table.split_index("train")
    for p, task in ((pa, "a"), (pb, "b")):
        clf = transfer.fit_probe(f["train"], table.target(task)[tr])
        assert np.allclose(p, clf.predict_proba(f["test"]), atol=1e-5)
    assert (pa.argmax(1) == table.target("a")[table.split_index("test")]).mean() > 0.9
    with pytest.raises(ValueError, match="strategies"):
        transfer.strategy(enc, table, ["a"], "zero-shot")


def test_fine_tuning_strategies_learn_and_move_the_features(tmp_path, monkeypatch):
    monkeypatch.setenv("RETINA_CACHE", str(tmp_path))
    table = toy_table()
    x = torch.from_numpy(table.images[table.split_index("test")]).permute(0, 3, 1, 2).float() / 255
    torch.manual_seed(0)
    enc = SmallCNN(widths=(8, 16))
    for kind in ("ft", "lpft"):
        model = transfer.strategy(copy.deepcopy(enc), table, ["a", "b"], kind, epochs=6, lr=1e-2, bs=16, size=16)
        pa, _ = transfer.predict(model, x, [3, 2])
        assert (pa.argmax(1) == table.target("a")[table.split_index("test")]).mean() > 0.9
        assert transfer.feature_distortion(enc, model[0], x) > 1e-3
    assert transfer.feature_distortion(enc, copy.deepcopy(enc), x) == pytest.approx(0, abs=1e-6)
