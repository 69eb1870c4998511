"""SimCLR pieces (chapter 1): NT-Xent against lightly, the views callback, the learner factory."""
import pytest
import torch

from helpers import checks, data
from helpers.methods import simclr
from helpers.synthretina import synthretina_table
from helpers.views import FundusViews


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
    views = FundusViews(crop_scale=(1, 1), max_rotate=0, flip=False, brightness=0.3, contrast=0, blur_p=0,
                        gain=0, gamma=0, noise=0)
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
    learn = Learner(dls, Spy(), loss_func=simclr.NTXent(0.5), cbs=[simclr.SimCLRViews(FundusViews())])
    learn.fit(1)
    assert seen["x"].shape[0] == 2 * n and torch.isfinite(seen["x"]).all()


def test_simclr_learner_takes_any_encoder_and_a_students_loss():
    from helpers.models import create_encoder
    table = synthretina_table(32, 8, 0, size=32, seed=0, progress=False)
    dls = data.dataloaders(table, None, bs=16, size=32, device="cpu", augment=False, normalize=False)
    calls = []

    def my_loss(z1, z2, t):
        calls.append((z1.shape, t))
        return simclr.nt_xent_loss(z1, z2, t)
    for arch in ("small_cnn_narrow", "resnet10t"):
        enc, dim = create_encoder(arch)
        learn = simclr.simclr_learner(dls, enc, proj_dim=16, temperature=0.3, loss_fn=my_loss)
        assert learn.model.head[0].in_features == dim == enc.num_features
        with learn.no_bar(), learn.no_logging():
            learn.fit(1, 1e-3)
    assert calls and calls[0] == (torch.Size([16, 16]), 0.3)
