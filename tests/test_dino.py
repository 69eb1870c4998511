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
    assert multi_crop(x, n_local=1, local_size=24)[1][0].shape == (4, 3, 24, 24)
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


def test_monitor_records_collapse_diagnostics_per_epoch():
    from helpers import evaluation
    from helpers.models import create_encoder
    from helpers.synthretina import synthretina_table
    table = synthretina_table(48, 24, 0, size=32, seed=0, progress=False)
    dls = data.dataloaders(table, None, bs=16, size=32, device="cpu", augment=False, normalize=False)
    mon = evaluation.monitor_set(table, "amd", n=20, size=32)
    assert mon["x_train"].shape == (20, 3, 32, 32) and mon["x_valid"].shape == (20, 3, 32, 32)
    torch.manual_seed(0)
    enc, _ = create_encoder("small_cnn_narrow")
    learn = dino.dino_learner(dls, enc, out_dim=32, hidden_dim=32, bottleneck_dim=16, n_local=2,
                              monitor=lambda t: evaluation.collapse_diagnostics(t[0], mon, embed=t[1].mlp))
    with learn.no_bar(), learn.no_logging():
        learn.fit(2, 1e-3)
    ep = learn.dino.epochs
    assert [e["epoch"] for e in ep] == [1, 2]
    assert all(0 <= e["knn"] <= 1 and e["embedding_std"] > 0 and e["entropy"] > 0 for e in ep)


def test_embedding_std_is_one_for_spread_features_and_zero_for_collapsed():
    from helpers import evaluation

    class Fixed(torch.nn.Module):
        def __init__(self, f):
            super().__init__()
            self.f, self.w = f, torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return self.f[: len(x)]
    torch.manual_seed(0)
    mon = {"x_train": torch.zeros(400, 1), "y_train": torch.arange(400) % 2, "x_valid": torch.zeros(400, 1),
           "y_valid": torch.arange(400) % 2, "n_classes": 2}
    spread = evaluation.collapse_diagnostics(Fixed(torch.randn(400, 64)), mon)
    collapsed = evaluation.collapse_diagnostics(Fixed(torch.ones(400, 64) + 1e-6 * torch.randn(400, 64)), mon)
    assert 0.9 < spread["embedding_std"] < 1.1 and collapsed["embedding_std"] < 0.01


def test_cls_attention_is_the_attention_timm_computes():
    """Our CLS maps, times the values, give back exactly the block's attention output (timm's own forward)."""
    from helpers.models import small_vit
    torch.manual_seed(0)
    vit = small_vit(img_size=24, patch_size=6, embed_dim=24, depth=2, num_heads=2).eval()
    x = torch.randn(3, 3, 24, 24)
    maps = dino.cls_attention(vit, x)
    assert maps.shape == (3, 2, 4, 4)
    seen = {}
    blk = vit.blocks[-1]
    h1 = blk.norm1.register_forward_hook(lambda m, i, o: seen.__setitem__("in", o))
    h2 = blk.attn.register_forward_hook(lambda m, i, o: seen.__setitem__("out", o))
    vit(x)
    h1.remove(), h2.remove()
    a, h = blk.attn, seen["in"]
    b, n, c = h.shape
    qkv = a.qkv(h).reshape(b, n, 3, a.num_heads, c // a.num_heads).permute(2, 0, 3, 1, 4)
    cls_row = torch.cat([1 - maps.flatten(2).sum(-1, keepdim=True), maps.flatten(2)], -1)  # CLS->CLS is the rest
    head_out = (cls_row[:, :, None] @ qkv[2])[:, :, 0]  # [B, heads, d]
    want = a.proj(head_out.reshape(b, c))
    assert torch.allclose(want, seen["out"][:, 0], atol=1e-5)
    assert torch.all(maps >= 0) and torch.all(maps.flatten(1).sum(1) <= 2 + 1e-5)  # 2 heads, each <= 1


def test_attention_share_against_masks():
    att = torch.zeros(2, 4, 4)
    att[:, 0, 0] = 1.0  # all attention on the top-left patch
    masks = torch.zeros(2, 16, 16, dtype=torch.bool)
    masks[:, :4, :4] = True  # the mask is exactly that patch: 1/16 of the image
    out = dino.attention_share(att, masks)
    assert out["attention_share"] == pytest.approx(1.0) and out["area_share"] == pytest.approx(1 / 16)
    assert out["ratio"] == pytest.approx(16.0)
    uniform = dino.attention_share(torch.ones(2, 4, 4), masks)
    assert uniform["ratio"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="empty"):
        dino.attention_share(att, torch.zeros(2, 16, 16, dtype=torch.bool))


def test_horizon_momentum_scales_the_teacher_to_the_run_and_keeps_the_papers_value_for_long_runs():
    """Issue 26: 0.996 averages over ~250 steps, most of a 300-step CPU run; the horizon rule scales it."""
    from helpers.runs import horizon_momentum
    assert horizon_momentum(300, 0.1) == pytest.approx(1 - 1 / 30)
    assert horizon_momentum(75, 0.1) == pytest.approx(1 - 1 / 7.5)
    assert horizon_momentum(125_000, 0.1) == 0.996  # the paper's run: the paper's momentum
    assert horizon_momentum(2, 0.1) == 0.0
    with pytest.raises(ValueError):
        horizon_momentum(0, 0.1)
    with pytest.raises(ValueError):
        horizon_momentum(100, 0.0)


def test_the_teacher_follows_the_horizon_and_the_callback_records_agreement():
    from helpers.models import create_encoder
    from helpers.runs import EMA, horizon_momentum
    from helpers.synthretina import synthretina_table
    table = synthretina_table(32, 8, 0, size=32, seed=0, progress=False)
    dls = data.dataloaders(table, None, bs=8, size=32, device="cpu", augment=False, normalize=False)
    torch.manual_seed(0)
    enc, _ = create_encoder("small_cnn_narrow")
    learn = dino.dino_learner(dls, enc, out_dim=32, hidden_dim=32, bottleneck_dim=16, n_local=2, momentum=0.996,
                              teacher_horizon=0.5)
    with learn.no_bar(), learn.no_logging():
        learn.fit(2, 1e-3)
    ema = next(cb for cb in learn.cbs if isinstance(cb, EMA))
    steps = 2 * len(dls.train)
    assert ema.base == pytest.approx(horizon_momentum(steps, 0.5)) and ema.base < 0.996
    ep = learn.dino.epochs
    assert all(0 <= e["agreement"] <= 1 for e in ep) and all(ema.base <= e["momentum"] <= 1 for e in ep)
    assert all("agreement" in h for h in learn.dino.history)
    # without a horizon the paper's base momentum is kept
    learn = dino.dino_learner(dls, create_encoder("small_cnn_narrow")[0], out_dim=32, hidden_dim=32,
                              bottleneck_dim=16, n_local=2, momentum=0.996)
    with learn.no_bar(), learn.no_logging():
        learn.fit(1, 1e-3)
    assert next(cb for cb in learn.cbs if isinstance(cb, EMA)).base == 0.996
