"""DINO pieces (chapter 2, issue 11): loss, centre, head and temperature schedule against lightly; the Learner."""
import pytest
import torch

from helpers import data
from helpers.methods import dino
from helpers.views import multi_crop


@pytest.mark.parametrize("batch,n_local", [(1, 0), (4, 2), (9, 6)])
def test_loss_and_centre_equal_lightly(batch, n_local):
    from lightly.loss import DINOLoss
    dim = 32
    theirs = DINOLoss(output_dim=dim, warmup_teacher_temp=0.04, teacher_temp=0.04, student_temp=0.1,
                      center_momentum=0.9)
    center = torch.zeros(1, dim)
    g = torch.Generator().manual_seed(batch)
    for _ in range(3):  # several steps, so the centre has moved
        teacher = [torch.randn(batch, dim, generator=g) for _ in range(2)]
        student = [torch.randn(batch, dim, generator=g) for _ in range(2 + n_local)]
        ours = dino.dino_loss(student, teacher, center, 0.1, 0.04)
        center = dino.update_center(center, teacher, 0.9)
        want = theirs(teacher, student, teacher_temp=0.04)
        assert torch.allclose(ours, want, atol=1e-5), (ours, want)
        assert torch.allclose(center, theirs.center.view(1, dim), atol=1e-6)


def test_loss_needs_two_views_and_ignores_gradients_through_the_teacher():
    t = [torch.randn(3, 8, requires_grad=True)]
    with pytest.raises(ValueError, match="two views"):
        dino.dino_loss([torch.randn(3, 8)], t, torch.zeros(1, 8), 0.1, 0.04)
    s = [torch.randn(3, 8, requires_grad=True) for _ in range(2)]
    dino.dino_loss(s, t, torch.zeros(1, 8), 0.1, 0.04).backward()
    assert t[0].grad is None and s[1].grad is not None and s[0].grad is None  # view 0 vs teacher 0 is skipped


def test_teacher_temperature_warm_up_equals_lightly():
    from lightly.loss import DINOLoss
    ref = DINOLoss(output_dim=4, warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_teacher_temp_epochs=5)
    for epoch in range(8):
        want = float(ref.teacher_temp_schedule[epoch]) if epoch < 5 else 0.07
        assert dino.teacher_temperature(epoch, 5, 0.04, 0.07) == pytest.approx(want, abs=1e-7)
    assert dino.teacher_temperature(0, 0, 0.04, 0.07) == 0.07


def test_head_matches_lightly_shapes_and_normalised_last_layer():
    from lightly.models.modules import DINOProjectionHead
    ours = dino.DINOHead(64, out_dim=100, hidden_dim=48, bottleneck_dim=16)
    theirs = DINOProjectionHead(64, hidden_dim=48, bottleneck_dim=16, output_dim=100)
    x = torch.randn(5, 64)
    assert ours(x).shape == theirs(x).shape == (5, 100)
    lin = [m for m in ours.mlp if isinstance(m, torch.nn.Linear)]
    lin_t = [m for m in theirs.modules() if isinstance(m, torch.nn.Linear) and m is not theirs.last_layer]
    assert [tuple(m.weight.shape) for m in lin] == [tuple(m.weight.shape) for m in lin_t]
    g = ours.last_layer.parametrizations.weight.original0
    assert not g.requires_grad and torch.all(g == 1)
    rows = ours.last_layer.weight.norm(dim=1)  # unit prototypes: every output is a cosine
    assert torch.allclose(rows, torch.ones_like(rows), atol=1e-5)
    assert ours(100 * x).abs().max() <= 1 + 1e-5
    free = dino.DINOHead(64, out_dim=10, norm_last_layer=False)
    assert free.last_layer.parametrizations.weight.original0.requires_grad


def test_multi_crop_makes_global_and_small_local_views():
    x = torch.rand(4, 3, 48, 48)
    glob, loc = multi_crop(x, n_local=3)
    assert len(glob) == 2 and len(loc) == 3
    assert glob[0].shape == (4, 3, 48, 48) and loc[0].shape == (4, 3, 18, 18)
    assert not torch.allclose(glob[0], glob[1])


def test_dino_learner_trains_the_student_and_moves_teacher_and_centre():
    from helpers.models import create_encoder
    from helpers.synthretina import synthretina_table
    table = synthretina_table(32, 8, 0, size=32, seed=0, progress=False)
    dls = data.dataloaders(table, None, bs=16, size=32, device="cpu", augment=False, normalize=False)
    torch.manual_seed(0)
    enc, _ = create_encoder("small_cnn_narrow")
    learn = dino.dino_learner(dls, enc, out_dim=64, hidden_dim=32, bottleneck_dim=16, n_local=2, momentum=0.9)
    teacher0 = [p.clone() for p in learn.model.teacher.parameters()]
    with learn.no_bar(), learn.no_logging():
        learn.fit(1, 1e-3)
    cb = learn.dino
    assert len(cb.history) == len(dls.train) and cb.center.abs().sum() > 0
    assert all(p.grad is None for p in learn.model.teacher.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(teacher0, learn.model.teacher.parameters()))
    assert 0 <= cb.history[-1]["entropy"] <= torch.log(torch.tensor(64.0)) + 1e-4
    assert cb.history[-1]["kl_uniform"] >= -1e-6
