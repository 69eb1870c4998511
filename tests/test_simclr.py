"""SimCLR pieces (chapter 1): NT-Xent against lightly, the views callback, load-or-train."""
import pytest
import torch

from helpers import checks, data, simclr
from helpers.synthretina import synthretina_table


@pytest.mark.parametrize("temperature", [0.07, 0.2, 0.5, 1.0])
@pytest.mark.parametrize("batch", [2, 8, 33])
def test_nt_xent_equals_lightly(temperature, batch):
    from lightly.loss import NTXentLoss
    torch.manual_seed(batch)
    z1, z2 = torch.randn(batch, 16), torch.randn(batch, 16)
    ours = simclr.nt_xent_loss(z1, z2, temperature)
    theirs = NTXentLoss(temperature=temperature)(z1, z2)
    assert torch.allclose(ours, theirs, atol=1e-5), (ours, theirs)


def test_nt_xent_prefers_matching_pairs():
    z = torch.randn(16, 8)
    aligned = simclr.nt_xent_loss(z, z + 0.01 * torch.randn_like(z), 0.1)
    shuffled = simclr.nt_xent_loss(z, z[torch.randperm(16)], 0.1)
    assert aligned < shuffled


def test_check_nt_xent_accepts_right_and_rejects_wrong():
    assert checks.check_nt_xent(simclr.nt_xent_loss)
    wrong = lambda z1, z2, t: simclr.nt_xent_loss(z1, z2, 1.0)  # ignores the temperature
    with pytest.raises(checks.ExerciseError, match="temperature"):
        checks.check_nt_xent(wrong)

    def stub(z1, z2, t):
        raise NotImplementedError
    assert checks.check_nt_xent(stub) is False


def test_callback_makes_two_distinct_views_of_the_same_images():
    from fastai.learner import Learner
    table = synthretina_table(16, 8, 0, size=32, seed=0, progress=False)
    dls = data.dataloaders(table, None, bs=8, size=32, device="cpu", augment=False, normalize=False)
    seen = {}

    class Spy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(3 * 32 * 32, 4)

        def forward(self, x):
            seen["x"] = x.detach().clone()
            return self.lin(x.flatten(1))

    # only a random brightness per view: each view is its image times a factor, so partners are
    # perfectly correlated pixel by pixel while the two views still differ
    views = simclr.FundusViews(crop_scale=(1, 1), max_rotate=0, flip=False, brightness=0.3, contrast=0, blur_p=0)
    learn = Learner(dls, Spy(), loss_func=simclr.NTXent(0.5), cbs=[simclr.SimCLRViews(views)])
    learn.fit(1)
    x = seen["x"]
    n = x.shape[0] // 2
    assert x.shape[0] == 2 * n and n > 0
    assert not torch.allclose(x[:n], x[n:])
    raw = x * views.std + views.mean
    a, b = raw[:n].flatten(1), raw[n:].flatten(1)
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    corr = (a / a.norm(dim=1, keepdim=True)) @ (b / b.norm(dim=1, keepdim=True)).t()
    assert (corr.diag() > 0.99).all()
    assert (corr.argmax(1) == torch.arange(n)).all()
    # the default views build the same shape on the batch's device
    learn = Learner(dls, Spy(), loss_func=simclr.NTXent(0.5), cbs=[simclr.SimCLRViews(simclr.FundusViews())])
    learn.fit(1)
    assert seen["x"].shape[0] == 2 * n and torch.isfinite(seen["x"]).all()


def test_views_keep_shape_and_hue_shift_changes_colour():
    x = torch.rand(4, 3, 32, 32)
    v = simclr.FundusViews()(x)
    assert v.shape == x.shape and torch.isfinite(v).all()
    red = torch.zeros(2, 3, 16, 16)
    red[:, 0] = 0.9
    keep = simclr.FundusViews(crop_scale=(1, 1), max_rotate=0, flip=False, brightness=0, contrast=0, blur_p=0)
    hue = simclr.FundusViews(crop_scale=(1, 1), max_rotate=0, flip=False, brightness=0, contrast=0, blur_p=0,
                             hue=1.0)
    torch.manual_seed(0)
    assert torch.allclose(keep(red), keep(red))
    assert not torch.allclose(keep(red), hue(red), atol=0.1)


def test_load_or_train_reuses_a_saved_run(tmp_path):
    import timm
    table = synthretina_table(32, 8, 0, size=32, seed=0, progress=False)
    dls = data.dataloaders(table, None, bs=16, size=32, device="cpu", augment=False, normalize=False)

    def make():
        torch.manual_seed(0)
        enc = timm.create_model("resnet10t", num_classes=0)
        return simclr.simclr_learner(dls, enc, enc.num_features, 16, 0.5)
    learn = make()
    h1 = simclr.load_or_train(learn, "k1", 1, 1e-3, folder=tmp_path)
    assert not h1["loaded"] and len(h1["train"]) > 0 and len(h1["valid"]) == 1
    assert list(tmp_path.glob("*.safetensors"))
    learn2 = make()
    h2 = simclr.load_or_train(learn2, "k1", 1, 1e-3, folder=tmp_path)
    assert h2["loaded"] and h2["train"] == h1["train"]
    for (k, a), b in zip(learn.model.state_dict().items(), learn2.model.state_dict().values()):
        assert torch.equal(a, b), k
