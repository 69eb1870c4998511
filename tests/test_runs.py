"""helpers.runs (chapter 1's Train section, shared by every pretraining chapter): load-or-train with
checkpoints along the way, atomic and locked writes, the EMA teacher (against lightly)."""
import copy
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from helpers import data, runs
from helpers.table import ImageTable


def tiny_table(n=48, size=16, seed=0):
    import numpy as np
    import pandas as pd
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    images = (rng.random((n, size, size, 3)) * 80 + 100 * y[:, None, None, None]).astype("uint8")
    split = np.array(["train"] * (n // 2) + ["valid"] * (n // 4) + ["test"] * (n - n // 2 - n // 4))
    return ImageTable(images, pd.DataFrame({"y": y, "split": split}), tasks={"y": "single"})


def tiny_learner(seed=0):
    from fastai.learner import Learner
    torch.manual_seed(seed)
    dls = data.dataloaders(tiny_table(), "y", bs=8, size=16, device="cpu", augment=False, seed=seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 2))
    return Learner(dls, model, loss_func=nn.CrossEntropyLoss())


def test_ema_update_equals_lightly_update_momentum():
    from lightly.utils.scheduler import cosine_schedule
    from lightly.models.utils import update_momentum
    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(5, 7), nn.BatchNorm1d(7), nn.Linear(7, 3))
    teacher = copy.deepcopy(student)
    for p in teacher.parameters():
        p.data.normal_()
    ours, theirs = copy.deepcopy(teacher), copy.deepcopy(teacher)
    for m in (0.0, 0.5, 0.996):
        runs.ema_update(student, ours, m)
        update_momentum(student, theirs, m)
        for a, b in zip(ours.parameters(), theirs.parameters()):
            assert torch.allclose(a, b, atol=1e-7)
    # the momentum schedule equals lightly's cosine schedule (base -> 1 over training; lightly counts
    # max_steps - 1 intervals)
    for step in (0, 3, 8, 9):
        assert runs.cosine_momentum(step / 9, 0.99, 1.0) == pytest.approx(cosine_schedule(step, 10, 0.99, 1.0))


def test_ema_callback_moves_the_teacher_after_every_step():
    from fastai.learner import Learner

    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.student, self.teacher = nn.Sequential(nn.Flatten(), nn.Linear(768, 2)), None
            self.teacher = copy.deepcopy(self.student)
            for p in self.teacher.parameters():
                p.requires_grad_(False)

        def forward(self, x):
            return self.student(x)

    torch.manual_seed(0)
    dls = data.dataloaders(tiny_table(), "y", bs=8, size=16, device="cpu", augment=False, seed=0)
    model = Pair()
    before = [p.clone() for p in model.teacher.parameters()]
    seen = []

    class Spy(runs.EMA):
        def after_step(self):
            student_now = [p.detach().clone() for p in self.learn.model.student.parameters()]
            teacher_then = [p.detach().clone() for p in self.learn.model.teacher.parameters()]
            super().after_step()
            want = [self.momentum * t + (1 - self.momentum) * s for t, s in zip(teacher_then, student_now)]
            seen.append(all(torch.allclose(w, p) for w, p in zip(want, self.learn.model.teacher.parameters())))

    ema = Spy(lambda m: m.student, lambda m: m.teacher, momentum=0.9)
    learn = Learner(dls, model, loss_func=nn.CrossEntropyLoss(), cbs=[ema])
    learn.fit(1, 1e-2)
    assert len(seen) == len(dls.train) and all(seen)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.teacher.parameters()))
    assert 0.9 < ema.momentum <= 1.0


def test_load_or_train_reuses_a_run_and_records_the_real_validation_loss(tmp_path):
    folder = tmp_path / "new" / "dir"  # a folder that does not exist yet is created
    learn = tiny_learner()
    h = runs.load_or_train(learn, "k1", 3, 1e-2, name="toy", folder=folder, save_at=(1, 2, 3))
    assert not h["loaded"] and len(h["train"]) == 3 * len(learn.dls.train)
    assert len(h["valid"]) == len(h["train_epoch"]) == 3
    # the last recorded validation loss is the loss on the validation set, not the training loss
    assert h["valid"][-1] == pytest.approx(float(learn.validate()[0]), rel=1e-5)
    assert h["valid"] != h["train_epoch"]
    assert sorted(h["checkpoints"]) == [1, 2, 3]
    again = tiny_learner(seed=1)
    h2 = runs.load_or_train(again, "k1", 3, 1e-2, name="toy", folder=folder, save_at=(1, 2, 3))
    assert h2["loaded"] and h2["train"] == h["train"] and h2["checkpoints"] == h["checkpoints"]
    for a, b in zip(learn.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)
    # no temporary or partial file is left behind
    assert not [p for p in folder.iterdir() if p.suffix == ".tmp"]


def test_intermediate_checkpoints_reload_identically(tmp_path):
    from fastai.callback.core import Callback
    snapshots = {}

    class Snap(Callback):
        order = 95  # after SaveCheckpoints

        def after_epoch(self):
            snapshots[self.epoch + 1] = {k: v.clone() for k, v in self.learn.model.state_dict().items()}

    learn = tiny_learner()
    learn.add_cb(Snap())
    h = runs.load_or_train(learn, "k2", 3, 1e-2, name="toy", folder=tmp_path, save_at=(1, 2))
    assert sorted(h["checkpoints"]) == [1, 2]
    for epoch, path in h["checkpoints"].items():
        fresh = tiny_learner(seed=5).model
        meta = runs.load_weights(fresh, path)
        assert meta["epoch"] == epoch
        for k, v in fresh.state_dict().items():
            assert torch.equal(v, snapshots[epoch][k]), (epoch, k)
    assert not torch.equal(snapshots[1]["1.weight"], snapshots[2]["1.weight"])


def test_run_key_and_weights_fingerprint_see_every_weight():
    a = nn.Linear(2000, 10)
    b = copy.deepcopy(a)
    with torch.no_grad():
        b.weight[-1, -1] += 1e-3  # beyond the first few kilobytes
    assert runs.weights_fingerprint(a) != runs.weights_fingerprint(b)
    assert runs.weights_fingerprint(a) == runs.weights_fingerprint(copy.deepcopy(a))
    assert runs.run_key(a=1, b=[1, 2]) == runs.run_key(b=[1, 2], a=1) != runs.run_key(a=2, b=[1, 2])


RACE = textwrap.dedent('''
    import sys, torch
    from torch import nn
    sys.path.insert(0, {tests!r})
    from test_runs import tiny_learner
    from helpers import runs
    h = runs.load_or_train(tiny_learner(), "race", 2, 1e-2, name="toy", folder={folder!r})
    print("LOADED" if h["loaded"] else "TRAINED")
''')


def test_two_processes_racing_on_one_run_train_it_once(tmp_path):
    import os
    script = RACE.format(tests=os.path.dirname(__file__), folder=str(tmp_path))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    words = sorted(out.strip().splitlines()[-1] for out, _ in outs)
    assert words == ["LOADED", "TRAINED"]
    assert len(list(tmp_path.glob("*.safetensors"))) == 1
    assert not list(tmp_path.glob("*.tmp"))


def test_cached_json_computes_once_per_key(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"bacc": 0.5, "list": [1, 2]}
    a = runs.cached_json("ft", "k", compute, folder=tmp_path / "sub")
    b = runs.cached_json("ft", "k", compute, folder=tmp_path / "sub")
    c = runs.cached_json("ft", "other", compute, folder=tmp_path / "sub")
    assert a == b == c and len(calls) == 2


def test_a_checkpoint_of_another_architecture_is_refused_clearly(tmp_path):
    small, wider = torch.nn.Sequential(torch.nn.Linear(4, 2)), torch.nn.Sequential(torch.nn.Linear(4, 2),
                                                                                   torch.nn.Linear(2, 2))
    path = runs.save_weights(wider, tmp_path / "w.safetensors")
    with pytest.raises(ValueError, match="another architecture.*unexpected.*delete it"):
        runs.load_weights(small, path)
    runs.load_weights(wider, path)  # the same architecture loads


def test_mixed_precision_is_bf16_from_ampere_fp16_before_and_none_on_a_cpu(monkeypatch):
    from fastai.callback.fp16 import MixedPrecision
    assert runs.amp_mode("cpu") is None and runs.amp_mode(None) is None
    for capability, mode in (((7, 5), "fp16"), ((8, 0), "bf16"), ((9, 0), "bf16")):  # T4, A100, H100
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None, c=capability: c)
        assert runs.amp_mode("cuda") == mode
    learn = runs.mixed_precision(tiny_learner())
    assert not any(isinstance(cb, MixedPrecision) for cb in learn.cbs)  # a CPU trains in fp32


def test_the_epoch_table_is_folded_under_one_line(capsys):
    """Issue 27: a fit prints one summary line (losses, a sparkline) instead of a table row per epoch."""
    from fastai.data.core import DataLoaders
    from fastai.learner import Learner
    from torch.utils.data import DataLoader, TensorDataset

    from helpers import progress
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(64, generator=g)
    ds = TensorDataset(x, y[:, None])
    dls = DataLoaders(DataLoader(ds, batch_size=16), DataLoader(ds, batch_size=32))
    learn = Learner(dls, torch.nn.Linear(3, 1), loss_func=torch.nn.MSELoss())
    learn.fit(4, 0.1)
    out = capsys.readouterr().out
    line = [ln for ln in out.splitlines() if "epochs" in ln]
    assert len(line) == 1 and "4 epochs" in line[0] and "train loss" in line[0] and "valid loss" in line[0]
    assert "epoch     train_loss" not in out  # no table header, no per-epoch rows
    html = progress.table_html(["epoch", "train_loss", "valid_loss", "time"],
                               [["0", "2.0", "1.5", "00:01"], ["1", "1.0", "0.5", "00:01"]])
    assert html.startswith("<details><summary>2 epochs · train loss 2 → 1 · valid loss 1.5 → 0.5")
    assert html.count("<tr>") == 3
    assert progress.sparkline([3, 2, 1]) == "█▅▁" and progress.sparkline([]) == ""
    assert len(progress.sparkline(range(100), width=10)) == 10
