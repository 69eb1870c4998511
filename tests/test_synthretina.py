"""SynthRetina (chapter 0): determinism, label rules, masks, image statistics, learnability, bad arguments."""
import numpy as np
import pytest
import torch

from helpers import data, synthretina as S


def test_same_seed_same_bytes_and_index_independence():
    a, la, _ = S.sample(7, seed=3, size=64)
    b, lb, _ = S.sample(7, seed=3, size=64)
    assert a.tobytes() == b.tobytes() and la == lb
    imgs, labels = S.generate(10, seed=3, size=64)
    assert imgs[7].tobytes() == a.tobytes()  # index 7 alone == index 7 inside a batch
    c, _, _ = S.sample(7, seed=4, size=64)
    assert c.tobytes() != a.tobytes()
    v, _, _ = S.sample(7, seed=3, size=64, split="valid")
    assert v.tobytes() != a.tobytes()  # splits are separate streams


def test_grades_follow_the_documented_rules():
    _, labels = S.generate(300, seed=1, size=32)
    for _, r in labels.iterrows():
        assert r.dr_grade == S.dr_grade_rule(r.n_microaneurysms, r.n_haemorrhages, r.n_exudates,
                                             r.n_neovascularisation)
        assert r.hr_grade == S.hr_grade_rule(r.arteriolar_narrowing, r.n_av_nicking, r.n_flame_haemorrhages,
                                             r.n_cotton_wool_spots, r.disc_swelling)
        if r.dr_grade == 0:
            assert r.n_microaneurysms == r.n_haemorrhages == r.n_exudates == r.n_neovascularisation == 0
        assert r.glaucoma == int(r.cdr >= 0.6) and r.amd == int(r.n_drusen >= 5)
        assert r.normal == int(r.dr_grade == 0 and r.hr_grade == 0 and not r.glaucoma and not r.amd)
    # every grade occurs with the default prevalences
    assert set(labels.dr_grade) == set(range(5)) and set(labels.hr_grade) == set(range(5))


def test_prevalence_and_site_correlation_are_controlled():
    cfg = S.make_config(prevalence={"dr_grade": [1, 0, 0, 0, 0], "glaucoma": 1.0})
    _, labels = S.generate(40, seed=0, size=32, cfg=cfg)
    assert (labels.dr_grade == 0).all() and (labels.glaucoma == 1).all()
    cfg = S.make_config(balanced=True, site_correlation=1.0)
    _, labels = S.generate(200, seed=0, size=32, cfg=cfg)
    by_grade = labels.groupby("dr_grade")["site"].nunique()
    assert (by_grade == 1).all()  # fully correlated: each grade from one site
    _, free = S.generate(200, seed=0, size=32, cfg=S.make_config(balanced=True))
    assert (free.groupby("dr_grade")["site"].nunique() > 1).all()


@pytest.mark.parametrize("finding,channel,direction", [
    ("haemorrhages", 1, -1), ("microaneurysms", 1, -1), ("exudates", 2, +1), ("drusen", 2, +1),
    ("cotton_wool_spots", 2, +1), ("flame_haemorrhages", 1, -1), ("optic_disc", 1, +1)])
def test_masks_match_rendered_pixels(finding, channel, direction):
    """Inside a lesion's mask the image is darker (red lesions, green channel) or brighter (yellow/white
    lesions, blue channel) than a ring just around it."""
    from scipy import ndimage
    cfg = S.make_config(prevalence={"dr_grade": [0, 0, 0.5, 0.5, 0], "hr_grade": [0, 0, 0, 1, 0], "amd": 1.0})
    checked = 0
    for i in range(12):
        img, lab, masks = S.sample(i, seed=0, size=256, cfg=cfg, masks=True,
                                   overrides={"blur": 0.2, "illumination": 1.0})
        m = masks[finding]
        if m.sum() < 4:
            continue
        ring = ndimage.binary_dilation(m, iterations=4) & ~ndimage.binary_dilation(m, iterations=1)
        inside, around = img[..., channel][m].mean(), img[..., channel][ring].mean()
        assert direction * (inside - around) > 3, (finding, i, inside, around)
        checked += 1
    assert checked >= 3, f"too few images with {finding}"
    for name in S.MASKED:
        assert masks[name].dtype == bool and masks[name].shape == (256, 256)


def test_image_statistics():
    img, lab, masks = S.sample(0, seed=0, size=128, overrides={"eye": "OD", "blur": 0.3, "illumination": 1.0})
    yy, xx = np.mgrid[:128, :128]
    r = np.hypot((xx + 0.5) / 64 - 1, (yy + 0.5) / 64 - 1)
    assert img[r > 0.99].max() <= 2  # black outside the field of view
    inside = img[r < 0.9].astype(float)
    assert inside[:, 0].mean() > inside[:, 1].mean() > inside[:, 2].mean()  # orange-red fundus
    brightness = img.astype(float).mean(-1)
    right, left = brightness[:, 64:][r[:, 64:] < 0.9], brightness[:, :64][r[:, :64] < 0.9]
    assert brightness.max() > 200 and np.unravel_index(brightness.argmax(), brightness.shape)[1] > 64  # OD: disc on the right
    img_os, _, _ = S.sample(0, seed=0, size=128, overrides={"eye": "OS", "blur": 0.3, "illumination": 1.0})
    b_os = img_os.astype(float).mean(-1)
    assert np.unravel_index(b_os.argmax(), b_os.shape)[1] < 64  # OS: mirror image


def test_bad_arguments_fail_clearly():
    with pytest.raises(ValueError, match="from 32 to 512"):
        S.sample(0, size=16)
    with pytest.raises(ValueError, match="from 32 to 512"):
        S.sample(0, size=1024)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        S.make_config(prevalence={"glaucoma": 1.5})
    with pytest.raises(ValueError, match="summing to 1"):
        S.make_config(prevalence={"dr_grade": [0.5, 0.5, 0.5, 0, 0]})
    with pytest.raises(ValueError, match="unknown label 'cataract'"):
        S.make_config(prevalence={"cataract": 0.1})
    with pytest.raises(ValueError, match="site_correlation"):
        S.make_config(site_correlation=-0.1)
    with pytest.raises(ValueError, match="n_valid"):
        data.load("synthretina", size=32, n_train=10, n_valid=None, n_test=5)
    with pytest.raises(ValueError, match="unknown finding"):
        S.sample(0, overrides={"n_tumours": 3})
    with pytest.raises(ValueError, match="unknown site 'site-Z'; sites: site-A"):
        S.sample(0, overrides={"site": "site-Z"})


def test_render_draws_through_the_camera_it_is_given():
    """``render`` takes the site's Camera from its caller; the public API is re-exported by the package."""
    import numpy as np
    from helpers.synthretina import render, world
    assert all(hasattr(S, name) for name in S.__all__)
    assert S.DR_NAMES is __import__("helpers.table", fromlist=["DR_NAMES"]).DR_NAMES
    img, lab, _ = S.sample(5, seed=2, size=64)
    camera = next(c for c in S.DEFAULT_SITES if c.name == lab["site"])
    rng = lambda: np.random.default_rng([2, 0, 5, 1])  # the drawing stream sample() uses
    same, _ = render.render(lab, 64, rng(), camera)
    assert same.tobytes() == img.tobytes()
    other, _ = render.render(lab, 64, rng(), world.Camera("warm", (1.3, 0.8, 0.6), 0.5, 0.3, 0.0, 1.2))
    assert other.tobytes() != img.tobytes()
    assert other[..., 0].mean() > img[..., 0].mean()  # a warm cast: more red


def test_disk_cache_has_the_real_dataset_layout(tmp_path):
    t1 = data.load("synthretina", root=tmp_path, size=32, n_train=6, n_valid=3, n_test=3, seed=5, cache=True,
                   progress=False)
    folders = list(tmp_path.glob("synthretina-*"))
    assert len(folders) == 1 and (folders[0] / "labels.csv").exists()
    assert len(list((folders[0] / "images").glob("*.png"))) == 12
    t2 = data.load("synthretina", root=tmp_path, size=32, n_train=6, n_valid=3, n_test=3, seed=5, cache=True)
    mem = data.load("synthretina", size=32, n_train=6, n_valid=3, n_test=3, seed=5, progress=False)
    assert np.array_equal(t1.images, t2.images) and np.array_equal(t1.images, mem.images)
    assert list(t1.labels["dr_grade"]) == list(mem.labels["dr_grade"])


def test_generated_tables_are_read_back_identical_without_generating_again(tmp_path, monkeypatch):
    monkeypatch.setenv("RETINA_CACHE", str(tmp_path))
    first = data.load("synthretina", size=32, n_train=6, n_valid=3, n_test=3, seed=5, progress=False)
    assert len(list((tmp_path / "synthretina").glob("*.npz"))) == 1

    def no_generation(*args, **kwargs):
        raise AssertionError("generated again although the table was cached")
    monkeypatch.setattr(S, "generate", no_generation)
    again = data.load("synthretina", size=32, n_train=6, n_valid=3, n_test=3, seed=5, progress=False)
    assert again.fingerprint() == first.fingerprint()  # same pixels, labels and dtypes: the same run keys
    assert list(again.labels.columns) == list(first.labels.columns)
    with pytest.raises(AssertionError, match="generated again"):  # another seed is another table
        data.load("synthretina", size=32, n_train=6, n_valid=3, n_test=3, seed=6, progress=False)


def test_a_small_cnn_learns_the_grades_in_seconds():
    """Learnability at smoke size: 600 images of 32 px, 15 epochs of a 3-layer CNN (a few seconds).
    Measured here: balanced accuracy DR 0.35, HR 0.43, glaucoma 0.91 (chance 0.2, 0.2, 0.5)."""
    tab = data.load("synthretina", size=32, n_train=600, n_valid=0, n_test=300, seed=0, balanced=True,
                    progress=False)
    from sklearn.metrics import balanced_accuracy_score
    tr, te = tab.split_index("train"), tab.split_index("test")
    x = torch.tensor(tab.images).permute(0, 3, 1, 2).float() / 255
    x = (x - x[tr].mean((0, 2, 3), keepdim=True)) / x[tr].std((0, 2, 3), keepdim=True)
    floors = {"dr_grade": 0.28, "hr_grade": 0.30, "glaucoma": 0.75}
    for target, floor in floors.items():
        torch.manual_seed(0)
        y = torch.tensor(tab.labels[target].to_numpy()).long()
        conv = lambda i, o: [torch.nn.Conv2d(i, o, 3, padding=1), torch.nn.BatchNorm2d(o), torch.nn.ReLU()]
        net = torch.nn.Sequential(*conv(3, 16), torch.nn.MaxPool2d(2), *conv(16, 32), torch.nn.MaxPool2d(2),
                                  *conv(32, 64), torch.nn.AdaptiveMaxPool2d(1), torch.nn.Flatten(),
                                  torch.nn.Linear(64, 5))
        opt = torch.optim.Adam(net.parameters(), 3e-3)
        g = torch.Generator().manual_seed(0)
        for _ in range(15):
            net.train()
            order = torch.as_tensor(tr)[torch.randperm(len(tr), generator=g)]
            for i in range(0, len(order), 64):
                idx = order[i:i + 64]
                loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        net.eval()
        with torch.no_grad():
            pred = net(x[te]).argmax(1)
        bacc = balanced_accuracy_score(y[te], pred)
        assert bacc >= floor, f"{target}: balanced accuracy {bacc:.3f} < {floor}"


def _build_disk_copy(root, cache_dir):
    import os
    os.environ["RETINA_CACHE"] = cache_dir
    from helpers import data as d
    t = d.load("synthretina", root=root, size=32, n_train=6, n_valid=3, n_test=3, seed=9, cache=True, progress=False)
    return len(t)


@pytest.mark.parametrize("attempt", range(2))
def test_two_processes_writing_the_same_disk_copy_both_succeed(tmp_path, attempt):
    import multiprocessing as mp
    ctx = mp.get_context("spawn")
    with ctx.Pool(2) as pool:
        sizes = pool.starmap(_build_disk_copy, [(str(tmp_path), str(tmp_path / "cache"))] * 2)
    assert sizes == [12, 12]
    folders = [p.name for p in tmp_path.iterdir() if p.name.startswith(("synthretina", ".synthretina"))
               and not p.name.endswith(".lock")]
    assert len(folders) == 1 and not folders[0].startswith(".")  # one finished folder, no temporary leftovers
    assert len(list((tmp_path / folders[0] / "images").glob("*.png"))) == 12
