"""Chapter 4's diffusion pieces, checked against diffusers' schedulers; the autoencoder's latent scale stored and read."""
import numpy as np
import pytest
import torch

from helpers import data
from helpers.chapters import ch04
from helpers.methods import diffusion as D

diffusers = pytest.importorskip("diffusers")
T = 1000


def schedulers(kind):
    common = dict(num_train_timesteps=T, beta_schedule={"cosine": "squaredcos_cap_v2", "linear": "linear"}[kind],
                  clip_sample=False)
    return diffusers.DDPMScheduler(**common), diffusers.DDIMScheduler(**common, set_alpha_to_one=True)


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_schedule_and_forward_noising_equal_diffusers(kind):
    ddpm, _ = schedulers(kind)
    assert torch.allclose(D.betas(T, kind), ddpm.betas, atol=1e-6)
    abar = D.alphas_cumprod(T, kind)
    assert torch.allclose(abar, ddpm.alphas_cumprod, rtol=1e-4, atol=1e-7)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(6, 4, 8, 8, generator=g), torch.randn(6, 4, 8, 8, generator=g)
    t = torch.tensor([0, 1, 250, 500, 998, 999])
    assert torch.allclose(D.add_noise(x0, noise, t, abar), ddpm.add_noise(x0, noise, t), atol=1e-5)
    with pytest.raises(ValueError, match="schedules"):
        D.betas(T, "sigmoid-ish")


@pytest.mark.parametrize("steps", [T, 50])
def test_ddpm_step_equals_diffusers_noise_and_all(steps):
    ddpm, _ = schedulers("cosine")
    if steps != T:
        ddpm.set_timesteps(steps)
    abar = D.alphas_cumprod(T, "cosine")
    ts = D.timesteps(T, steps)
    assert ts == [int(t) for t in ddpm.timesteps] if steps != T else ts == list(range(T))[::-1]
    g = torch.Generator().manual_seed(1)
    x, eps = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    for i in (0, len(ts) // 2, len(ts) - 2, len(ts) - 1):  # first, middle, last with noise, t = 0 (no noise)
        t, prev = ts[i], (ts[i + 1] if i + 1 < len(ts) else -1)
        ours = D.ddpm_step(eps, t, prev, x, abar, torch.Generator().manual_seed(7))
        ref = ddpm.step(eps, t, x, generator=torch.Generator().manual_seed(7)).prev_sample
        assert torch.allclose(ours, ref, atol=1e-5), (t, (ours - ref).abs().max())


def test_ddim_step_equals_diffusers():
    _, ddim = schedulers("cosine")
    ddim.set_timesteps(25)
    abar = D.alphas_cumprod(T, "cosine")
    ts = D.timesteps(T, 25)
    assert ts == [int(t) for t in ddim.timesteps]
    g = torch.Generator().manual_seed(2)
    x, eps = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    for i, t in enumerate(ts):
        prev = ts[i + 1] if i + 1 < len(ts) else -1
        assert torch.allclose(D.ddim_step(eps, t, prev, x, abar), ddim.step(eps, t, x).prev_sample, atol=1e-5), t


def test_guidance_zero_is_unconditional_one_is_conditional():
    c, u = torch.randn(2, 4), torch.randn(2, 4)
    assert torch.equal(D.guided(c, u, 0.0), u)
    assert torch.allclose(D.guided(c, u, 1.0), c)
    assert torch.allclose(D.guided(c, u, 3.0), u + 3 * (c - u))


class Shift(torch.nn.Module):
    """A fake denoiser: ε̂ = x · 0.1 + class id (so conditional and unconditional passes differ)."""
    null = 3

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.1))
        self.calls = []

    def forward(self, x, t, y):
        self.calls.append((len(x), y.tolist()))
        return x * self.w + y.view(-1, 1, 1, 1).float()


def test_sampler_batches_the_guided_pass_and_is_reproducible():
    abar = D.alphas_cumprod(T, "cosine")
    m = Shift()
    y = torch.tensor([0, 2])
    a, traj = D.sample(m, y, abar, (4, 8, 8), steps=10, guidance=3.0, generator=torch.Generator().manual_seed(0),
                       trajectory=True)
    assert len(traj) == 10 and a.shape == (2, 4, 8, 8)
    assert m.calls[0] == (4, [0, 2, 3, 3])  # conditional and null labels in one batch
    b = D.sample(m, y, abar, (4, 8, 8), steps=10, guidance=3.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    m.calls.clear()
    D.sample(m, y, abar, (4, 8, 8), steps=5, guidance=1.0, method="ddpm", generator=torch.Generator().manual_seed(0))
    assert all(n == 2 for n, _ in m.calls) and len(m.calls) == 5  # no unconditional pass at guidance 1
    with pytest.raises(ValueError, match="steps"):
        D.timesteps(T, 0)


def test_noise_callback_noises_the_latents_and_drops_labels():
    class L:
        pass
    learn = L()
    z, y = torch.randn(4000, 4, 2, 2), torch.randint(0, 3, (4000,))
    learn.xb, learn.yb = (z,), (y,)
    cb = D.DiffusionNoise(D.alphas_cumprod(T, "cosine"), p_uncond=0.2, null=3)
    cb.learn = learn
    torch.manual_seed(0)
    cb.before_batch()
    xt, t, y2 = learn.xb
    noise = learn.yb[0]
    assert torch.allclose(xt, D.add_noise(z, noise, t, cb.abar), atol=1e-6)
    dropped = (y2 == 3).float().mean().item()
    assert 0.17 < dropped < 0.23 and torch.equal(y2[y2 != 3], y[y2 != 3])


def test_denoiser_learns_and_keeps_an_ema(tmp_path, monkeypatch):
    monkeypatch.setenv("RETINA_CACHE", str(tmp_path))
    g = torch.Generator().manual_seed(0)
    # two classes of 4 × 8 × 8 latents: a constant +1 or −1 image plus a little noise
    y = torch.arange(256) % 2
    z = (y.float() * 2 - 1).view(-1, 1, 1, 1).expand(-1, 4, 8, 8) + 0.05 * torch.randn(256, 4, 8, 8, generator=g)
    knobs = {"unet_channels": [16, 32], "unet_epochs": 6, "unet_batch_size": 32, "unet_lr": 3e-3, "T": 100,
             "schedule": "cosine", "p_uncond": 0.1, "ema": 0.9}
    model, hist = ch04.train_denoiser({"train": z, "valid": z[:64]}, {"train": y, "valid": y[:64]}, 2, knobs, 0, "cpu",
                                   source="test", bar=False)
    first, last = np.mean(hist["train"][:8]), np.mean(hist["train"][-8:])
    assert last < 0.7 * first, (first, last)
    assert not torch.equal(model.ema.conv_in.weight, model.unet.conv_in.weight)  # a lagging average, not a copy
    again, h2 = ch04.train_denoiser({"train": z, "valid": z[:64]}, {"train": y, "valid": y[:64]}, 2, knobs, 0, "cpu",
                                 source="test", bar=False)
    assert h2["loaded"] and torch.equal(again.ema.conv_in.weight, model.ema.conv_in.weight)
    out = D.sample(model.sampler(), torch.tensor([0, 1] * 8), model.abar, (4, 8, 8), steps=20, guidance=2.0,
                   generator=torch.Generator().manual_seed(0))
    assert out.shape == (16, 4, 8, 8) and torch.isfinite(out).all()


def test_autoencoder_stores_its_latent_scale_with_the_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("RETINA_CACHE", str(tmp_path))
    table = data.load("synthretina", size=32, n_train=64, n_valid=16, n_test=16, seed=0, progress=False)
    knobs = {"image_size": 32, "vae_channels": [16, 16], "latent_channels": 4, "vae_epochs": 1, "vae_batch_size": 32,
             "vae_lr": 1e-3, "kl_weight": 1e-4}
    ae, hist = ch04.train_autoencoder(table, knobs, 0, "cpu", bar=False)
    z = D.encode_images(ae, table.images[table.split_index("train")])
    assert z.shape == (64, 4, 16, 16)
    assert hist["latent_scale"] == pytest.approx(1 / float(z.std()), rel=1e-4)
    ae2, hist2 = ch04.train_autoencoder(table, knobs, 0, "cpu", bar=False)
    assert hist2["loaded"] and hist2["latent_scale"] == hist["latent_scale"]
    x = D.decode_latents(ae2, z[:4])
    assert x.shape == (4, 3, 32, 32) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert D.latent_scale(torch.full((10,), 3.0) + torch.arange(10.0)) == pytest.approx(1 / float(torch.arange(10.0).std()))


def test_a_missing_released_generator_says_where_it_comes_from(tmp_path, monkeypatch):
    from helpers.weights import WeightsError
    monkeypatch.delenv("RETINA_DERETFOUND", raising=False)
    monkeypatch.setenv("RETINA_CACHE", str(tmp_path))
    with pytest.raises(WeightsError, match="model_index.json.*Zenodo record 10253561.*RETINA_DERETFOUND.*OpenRAIL"):
        D.released_generator("deretfound")
    with pytest.raises(WeightsError, match="generators: deretfound"):
        D.released_generator("imagen")
