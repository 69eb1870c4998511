"""helpers.views: the views SimCLR contrasts (chapter 1) and the supervised augmentations (chapter 0)."""
import torch

from helpers import data, views
from helpers.views import FundusViews

PLAIN = dict(crop_scale=(1, 1), max_rotate=0, flip=False, brightness=0, contrast=0, gain=0, gamma=0, blur_p=0,
             noise=0)


def fundus_like(b=4, size=32):
    """Orange discs on black, like a field of view."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    fov = ((xx ** 2 + yy ** 2) < 0.8).float()
    x = torch.stack([0.8 * fov, 0.4 * fov, 0.2 * fov]).expand(b, 3, size, size).clone()
    return x * (0.9 + 0.2 * torch.rand(b, 1, 1, 1)), fov


def test_plain_views_are_the_identity_and_decode_inverts_the_normalisation():
    x, _ = fundus_like()
    v = FundusViews(**PLAIN)(x)
    assert torch.allclose(torch.from_numpy(views.decode(v)).permute(0, 3, 1, 2), x, atol=1e-5)


def test_camera_views_change_white_balance_per_image_and_stay_inside_the_field_of_view():
    x, fov = fundus_like(8)
    torch.manual_seed(0)
    v = torch.from_numpy(views.decode(FundusViews(**dict(PLAIN, gain=0.2, noise=0.03, blur_p=1.0))(x)))
    v = v.permute(0, 3, 1, 2)
    inside = fov.bool()
    ratio_in = (v[:, 0][:, inside] / v[:, 1][:, inside].clamp_min(1e-3)).mean(1)
    ratio_out = (x[:, 0][:, inside] / x[:, 1][:, inside]).mean(1)
    assert (ratio_in - ratio_out).abs().max() > 0.1  # the red/green balance moved
    assert ratio_in.std() > 0.02  # ... differently for each image
    far = ~(torch.nn.functional.max_pool2d(fov[None, None], 7, 1, 3)[0, 0].bool())
    assert v[:, :, far].abs().max() == 0  # black outside the field of view stays black (no noise there)


def test_hue_rotation_changes_colour_and_plain_views_do_not():
    red = torch.zeros(2, 3, 16, 16)
    red[:, 0] = 0.9
    keep, hue = FundusViews(**PLAIN), FundusViews(**dict(PLAIN, hue=1.0))
    torch.manual_seed(0)
    assert torch.allclose(keep(red), keep(red))
    assert not torch.allclose(keep(red), hue(red), atol=0.1)


def test_views_are_random_per_image_and_keep_shape():
    x, _ = fundus_like(6)
    f = FundusViews()
    a, b = f(x), f(x)
    assert a.shape == x.shape and torch.isfinite(a).all()
    assert not torch.allclose(a, b)


def test_train_batches_are_augmented_and_valid_batches_are_not():
    from helpers.synthretina import synthretina_table
    table = synthretina_table(16, 16, 0, size=32, seed=0, progress=False)
    dls = data.dataloaders(table, "dr_grade", bs=16, size=32, device="cpu", augment=True, seed=0)
    plain = data.dataloaders(table, "dr_grade", bs=16, size=32, device="cpu", augment=False, seed=0)
    xa, _ = next(iter(dls.train))
    xp, _ = next(iter(plain.train))
    # same images (same shuffling seed), but the augmented batch differs from the plain one
    assert xa.shape == xp.shape and not torch.allclose(xa, xp)
    va, _ = next(iter(dls.valid))
    vp, _ = next(iter(plain.valid))
    assert torch.allclose(va, vp)


def test_one_normalisation_per_modality_chosen_from_the_table():
    import dataclasses

    import pytest

    from helpers import data, datasets, views
    from helpers.synthretina import synthretina_table
    x = torch.rand(2, 3, 8, 8)
    for modality in views.STATS:
        assert torch.allclose(views.denormalize(views.normalize(x, modality), modality), x, atol=1e-6)
    with pytest.raises(ValueError, match="fundus, oct"):
        views.stats("x-ray")
    assert datasets.REGISTRY["octmnist"].modality == "oct" and datasets.REGISTRY["retinamnist"].modality == "fundus"
    fundus = synthretina_table(8, 4, 0, size=32, seed=0, progress=False)
    oct_ = dataclasses.replace(fundus, modality="oct")
    assert oct_.take([0, 1]).modality == "oct"
    raw = data.dataloaders(fundus, "dr_grade", bs=4, size=32, device="cpu", augment=False, normalize=False).valid
    seen = {}
    for name, table in (("fundus", fundus), ("oct", oct_)):
        dl = data.dataloaders(table, "dr_grade", bs=4, size=32, device="cpu", augment=False).valid
        seen[name] = next(iter(dl))[0]
    x0 = next(iter(raw))[0]
    for name in seen:
        assert torch.allclose(seen[name], views.normalize(x0, name), atol=1e-5), name
