"""Checks for chapter 4's exercises (see :mod:`helpers.checks`)."""
from __future__ import annotations

import torch

from ..methods.diffusion import add_noise, alphas_cumprod, betas, latent_scale
from .core import ExerciseError, _call, _digest, _scalar, _tensor, exercise, passed


@exercise("write q_sample")
def check_q_sample(fn) -> bool:
    """Chapter 4, exercise 1: ``fn(x0, noise, t, abar)`` = √ᾱ_t · x0 + √(1 − ᾱ_t) · noise, for one timestep per
    sample (and for a plain int), as :func:`helpers.methods.diffusion.add_noise`."""
    abar = alphas_cumprod(1000, "cosine")
    g = torch.Generator().manual_seed(4)
    x0, noise = torch.randn(5, 4, 6, 6, generator=g), torch.randn(5, 4, 6, 6, generator=g)
    for t in (torch.tensor([0, 10, 300, 700, 999]), 500):
        got = _call(fn, x0.clone(), noise.clone(), t, abar, called="fn(x0, noise, t, abar) with x0 and noise two "
                    f"{tuple(x0.shape)} tensors, abar the ({len(abar)},) schedule, and t " +
                    ("a tensor of one timestep per sample" if torch.is_tensor(t) else f"the plain int {t}"))
        want = add_noise(x0, noise, t, abar)
        got = _tensor(got, x0.shape, f"return a tensor shaped like x0 {tuple(x0.shape)}; with one t per sample, "
                      "index abar[t] and reshape it to (B, 1, 1, 1) so it broadcasts")
        if not torch.allclose(got, want, atol=1e-5):
            b = torch.as_tensor(t).long()
            beta = betas(1000, "cosine")[b].view(-1, *([1] * 3)) if b.ndim else betas(1000, "cosine")[b]
            a = abar[b].view(-1, *([1] * 3)) if b.ndim else abar[b]
            if torch.allclose(got, a * x0 + (1 - a) * noise, atol=1e-5):
                raise ExerciseError("the weights are square roots: √ᾱ_t for x0 and √(1 − ᾱ_t) for the noise "
                                    "(variances add, standard deviations multiply)")
            if torch.allclose(got, (1 - beta).sqrt() * x0 + beta.sqrt() * noise, atol=1e-5):
                raise ExerciseError("that is one step from x_(t−1); q(x_t | x_0) jumps from x0 in one go with the "
                                    "cumulative product ᾱ_t = abar[t], not 1 − β_t")
            if torch.allclose(got, (1 - a).sqrt() * x0 + a.sqrt() * noise, atol=1e-5):
                raise ExerciseError("swapped: ᾱ_t is the share of the *signal* left, so √ᾱ_t multiplies x0")
            raise ExerciseError("x_t = √ᾱ_t · x0 + √(1 − ᾱ_t) · noise with ᾱ_t = abar[t]")
    return passed("your q_sample matches the library (and diffusers' DDPMScheduler.add_noise, which the tests "
                  "compare it with): one jump from x0 to any t")


@exercise("compute the latent scale")
def check_latent_scale(fn) -> bool:
    """Chapter 4, exercise 2: ``fn(latents)`` → 1 / standard deviation of all the latent values (Stable
    Diffusion's ``scaling_factor``, :func:`helpers.methods.diffusion.latent_scale`)."""
    for shape, mu, sd in [((64, 4, 8, 8), 0.3, 2.5), ((10, 4, 16, 16), -1.0, 0.4)]:
        z = mu + sd * torch.randn(*shape, generator=torch.Generator().manual_seed(shape[0]))
        out = _call(fn, z, called=f"fn(latents) with latents a {tuple(shape)} tensor")
        got = _scalar(out, "return one number for the whole latent space (a float), not one per channel or value")
        want = latent_scale(z)
        if not abs(got - want) <= 1e-4 * want:  # `not <=`: a NaN is wrong too
            if abs(got - 1 / want) < 1e-4 / want:
                raise ExerciseError("that is the standard deviation; the scale *divides* by it, so that "
                                    "latents × scale have unit variance")
            if abs(got - float(1 / z.var())) < 1e-4 * float(1 / z.var()):
                raise ExerciseError("1 / variance over-corrects: multiply by 1 / standard deviation")
            raise ExerciseError(f"one number for the whole latent space: 1 / z.std() over every value (got {got:.4g}, "
                                f"expected {want:.4g})")
        if abs(float((z * got).std()) - 1) > 1e-3:
            raise ExerciseError("latents × your scale should have a standard deviation of 1")
    return passed("right: latents × scale have unit variance, the noise level the schedule assumes (Stable "
                  "Diffusion stores the same number as scaling_factor = 0.18215 for its own autoencoder)")


_GUIDANCE_OPTIONS = ("the conditional model", "pure noise", "the unconditional model", "the mean of both")


@exercise("write the guided noise and predict guidance 0")
def check_guidance(fn, guidance_zero_gives: str) -> bool:
    """Chapter 4, exercise 3: ``fn(eps_cond, eps_uncond, scale)`` = ε_u + s · (ε_c − ε_u), and what a sampler with
    scale 0 draws (one of ``_GUIDANCE_OPTIONS``)."""
    g = torch.Generator().manual_seed(5)
    c, u = torch.randn(3, 4, 5, 5, generator=g), torch.randn(3, 4, 5, 5, generator=g)
    for s in (0.0, 1.0, 2.5):
        got = _call(fn, c, u, s, called=f"fn(eps_cond, eps_uncond, scale) with two {tuple(c.shape)} tensors and "
                    f"the float scale {s}")
        got = _tensor(got, c.shape, f"return the guided noise, a tensor shaped like eps_cond {tuple(c.shape)}")
        if not torch.allclose(got, u + s * (c - u), atol=1e-6):
            if torch.allclose(got, c + s * (c - u), atol=1e-6):
                raise ExerciseError("start from the unconditional prediction: ε_u + s · (ε_c − ε_u), so s = 1 "
                                    "gives the conditional model back")
            if torch.allclose(got, s * c, atol=1e-6):
                raise ExerciseError("the unconditional term is missing: ε_u + s · (ε_c − ε_u)")
            raise ExerciseError(f"with scale {s}: expected ε_u + s · (ε_c − ε_u)")
    answer = str(guidance_zero_gives).strip().lower()
    if answer not in _GUIDANCE_OPTIONS:
        raise ExerciseError(f"answer with one of {list(_GUIDANCE_OPTIONS)}")
    if _digest(answer) != "aaa95f156f046af6":
        raise ExerciseError("put s = 0 in your formula: which prediction is left? The label then plays no part")
    return passed("right: at scale 0 the label is ignored (the model's unconditional half, trained with the label "
                  "dropped); 1 is the plain conditional model; above 1 guidance trades diversity for classes the "
                  "grader recognises — the figure and the table below measure both")
