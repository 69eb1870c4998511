"""MAE pieces (chapter 3, issue 12): patches, random masking with the official semantics, the masked loss,
the encoder against timm's own forward, and the Learner."""
import pytest
import torch

from helpers import data
from helpers.chapters import ch03
from helpers.methods import mae
from helpers.models import small_vit


def test_patchify_and_unpatchify_are_inverse():
    x = torch.randn(2, 3, 24, 24)
    p = mae.patchify(x, 6)
    assert p.shape == (2, 16, 6 * 6 * 3)
    assert torch.equal(mae.unpatchify(p, 6), x)
    assert torch.equal(p[0, 1].view(6, 6, 3).permute(2, 0, 1), x[0, :, :6, 6:12])  # row-major, (row, col, chan)
    with pytest.raises(ValueError, match="multiple"):
        mae.patchify(torch.randn(1, 3, 25, 24), 6)


@pytest.mark.parametrize("ratio", [0.0, 0.5, 0.75, 0.9])
def test_random_masking_keeps_len_keep_and_ids_restore_undoes_the_shuffle(ratio):
    b, n, d = 4, 36, 8
    x = torch.randn(b, n, d)
    kept, mask, ids_restore = mae.random_masking(x, ratio, torch.Generator().manual_seed(0))
    len_keep = int(n * (1 - ratio))
    assert kept.shape == (b, len_keep, d)
    assert torch.all(mask.sum(1) == n - len_keep) and set(mask.unique().tolist()) <= {0.0, 1.0}
    # the kept tokens are exactly the tokens where mask == 0, and un-shuffling restores the sequence
    for i in range(b):
        assert torch.equal(kept[i].sort(0).values, x[i][mask[i] == 0].sort(0).values)
    removed = torch.zeros(b, n - len_keep, d)
    full = torch.gather(torch.cat([kept, removed], 1), 1, ids_restore[..., None].expand(-1, -1, d))
    assert torch.equal(full[mask == 0], x[mask == 0])
    assert len({tuple(m.tolist()) for m in mask}) == (1 if ratio == 0 else b)  # per-sample noise


def test_loss_ignores_the_visible_patches():
    torch.manual_seed(0)
    pred, target = torch.randn(2, 16, 12), torch.randn(2, 16, 12)
    mask = (torch.rand(2, 16) < 0.75).float()
    base = mae.mae_loss(pred, target, mask)
    changed = pred.clone()
    changed[mask == 0] += 5.0
    assert torch.allclose(mae.mae_loss(changed, target, mask), base)
    assert not torch.allclose(mae.mae_loss(pred + 1.0, target, mask), base)
    assert mae.mae_loss(pred, target, mask, norm_pix_loss=True) != base


def test_encoder_at_ratio_zero_equals_the_plain_vit():
    torch.manual_seed(0)
    vit = small_vit(img_size=24, patch_size=6, embed_dim=24, depth=2, num_heads=2).eval()
    model = mae.MAEModel(vit, decoder_dim=16, decoder_depth=1, decoder_heads=2).eval()
    x = torch.randn(3, 3, 24, 24)
    latent, mask, ids_restore = model.forward_encoder(x, 0.0, torch.Generator().manual_seed(1))
    want = vit.forward_features(x)
    assert mask.sum() == 0
    assert torch.allclose(latent[:, 0], want[:, 0], atol=1e-5)  # CLS
    patches = torch.gather(latent[:, 1:], 1, ids_restore[..., None].expand(-1, -1, latent.shape[2]))
    assert torch.allclose(patches, want[:, 1:], atol=1e-5)


def test_mae_learner_trains_and_the_decoder_predicts_every_patch():
    from helpers.synthretina import synthretina_table
    table = synthretina_table(32, 8, 0, size=32, seed=0, progress=False)
    dls = data.dataloaders(table, None, bs=16, size=32, device="cpu", augment=False, normalize=False)
    torch.manual_seed(0)
    enc = small_vit(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
    learn = mae.mae_learner(dls, enc, mask_ratio=0.75, decoder_dim=16, decoder_depth=1)
    before = [p.clone() for p in enc.parameters()]
    with learn.no_bar(), learn.no_logging():
        learn.fit(1, 1e-3)
    assert any(not torch.equal(a, b) for a, b in zip(before, enc.parameters()))
    pred, mask, target = learn.model(torch.randn(2, 3, 32, 32))
    assert pred.shape == target.shape == (2, 16, 8 * 8 * 3) and int(mask.sum(1)[0]) == 16 - int(16 * 0.25)


def test_layer_decay_groups_and_rates_follow_the_mae_recipe():
    """One group per depth with the MAE authors' layer ids; fastai gives each group its own rate."""
    import numpy as np
    from fastai.callback.core import Callback
    from fastai.learner import Learner
    from helpers import transfer
    vit = small_vit(img_size=32, patch_size=8, embed_dim=24, depth=3, num_heads=2)
    model = transfer.classifier(vit, 2)
    groups = transfer.vit_layer_groups(model)
    assert len(groups) == 3 + 2
    assert sum(len(g) for g in groups) == len(list(model.parameters()))
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in groups[0]} == {"0.cls_token", "0.pos_embed", "0.patch_embed.proj.weight",
                                                 "0.patch_embed.proj.bias"}
    assert all(names[id(p)].startswith("0.blocks.1.") for p in groups[2])
    assert "1.weight" in {names[id(p)] for p in groups[-1]}
    lrs = transfer.layer_decay_lrs(1e-3, 0.65, 3)
    # MAE's param_groups_lrd: scale = decay ** (num_layers - layer_id) with num_layers = depth + 1
    assert np.allclose(lrs, [1e-3 * 0.65 ** (4 - i) for i in range(5)]) and lrs[-1] == 1e-3
    from helpers.synthretina import synthretina_table
    dls = data.dataloaders(synthretina_table(16, 8, 0, size=32, seed=0, progress=False), "amd", bs=8, size=32,
                           device="cpu")
    learn = Learner(dls, model, loss_func=torch.nn.CrossEntropyLoss(), splitter=transfer.vit_layer_groups)
    seen = []

    class Peak(Callback):  # the rates fastai sets for each group, batch by batch
        def after_batch(self):
            seen.append([h["lr"] for h in self.learn.opt.hypers])
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(1, lrs, pct_start=0.5, cbs=[Peak()])
    ratios = np.array(seen[0]) / np.array(seen[0])[-1]
    assert np.allclose(ratios, lrs / lrs[-1])  # every group scaled as its layer id says


def test_pretrain_saves_the_run_and_reads_it_back(tmp_path, monkeypatch):
    from helpers import profiles
    from helpers.synthretina import synthretina_table
    monkeypatch.setenv("RETINA_CACHE", str(tmp_path))
    K = dict(profiles.load("smoke").mae, epochs=1)
    table = synthretina_table(32, 8, 8, size=32, seed=0, progress=False)
    m1, h1 = ch03.pretrain(table, K, 0, "cpu", save_at=(1,), bar=False)
    m2, h2 = ch03.pretrain(table, K, 0, "cpu", save_at=(1,), bar=False)
    assert not h1["loaded"] and h2["loaded"] and 1 in h2["checkpoints"]
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
    _, h3 = ch03.pretrain(table, K, 0, "cpu", mask_ratio=0.5, bar=False)  # another ratio is another run
    assert not h3["loaded"]
