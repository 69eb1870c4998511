"""Checks for the chapters' exercises: each tells the student whether an answer is right.

A check prints a line starting with ✅ when the answer is right and raises
:class:`ExerciseError` with a hint when it is not; an exercise left as
``raise NotImplementedError`` is reported as not attempted yet. The chapter
that poses each exercise is named in the check's docstring. Instructors: see
the "For instructors" page.
"""
from __future__ import annotations

import functools
import math


class ExerciseError(AssertionError):
    """An exercise answer that is not right yet; the message says what to look at."""


def passed(message: str) -> bool:
    print(f"✅ {message}")
    return True


def pending(message: str) -> bool:
    print(f"⏳ not attempted yet: {message}")
    return False


def exercise(what: str):
    """Decorator for a check: a student's stub — an answer still ``None``, or code that still raises
    ``NotImplementedError`` — is reported as not attempted yet (``⏳ not attempted yet: <what>``, the
    check returns False) instead of failing, so a student copy runs to its end."""
    def wrap(check):
        @functools.wraps(check)
        def run(*args, **kwargs):
            if any(a is None for a in list(args) + list(kwargs.values())):
                return pending(what)
            try:
                return check(*args, **kwargs)
            except NotImplementedError:
                return pending(what)
        return run
    return wrap


def _digest(text: str) -> str:
    """Answers are compared by hash, so reading this module does not give them away."""
    import hashlib
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _finite(x) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


# --------------------------------------------------------------------------- chapter 0

@exercise("write my_dr_grade")
def check_dr_rule(fn) -> bool:
    """Chapter 0, exercise 1: ``fn(counts) -> grade`` agrees with SynthRetina's DR rule."""
    import itertools
    from .synthretina import dr_grade_rule
    for ma, hm, ex, nv in itertools.product([0, 1, 5], [0, 1, 9, 10, 15], [0, 3], [0, 1]):
        counts = {"n_microaneurysms": ma, "n_haemorrhages": hm, "n_exudates": ex, "n_neovascularisation": nv}
        want, got = dr_grade_rule(ma, hm, ex, nv), fn(counts)
        if got != want:
            raise ExerciseError(f"for {counts} the grade is {want}, you returned {got}. "
                                "Check the rules from grade 4 downwards: the most severe finding decides.")
    return passed("your DR rule agrees with SynthRetina's on 60 combinations of findings")


@exercise("fill in hr_answers")
def check_hr_answers(answers: dict) -> bool:
    """Chapter 0, exercise 2: the HR grades of three described eyes (answers stored hashed)."""
    want = {'a': 'd9b9fb85d6a52f42', 'b': 'd9a3ab15e7730fff', 'c': 'f7652537c79edd74'}
    wrong = [k for k in want if _digest(f"ch00-hr:{k}:{answers.get(k)}") != want[k]]
    if wrong:
        raise ExerciseError(f"not yet right: {', '.join(wrong)}. Remember: the highest finding present decides, "
                            "whether or not the lower ones are present.")
    return passed("all three HR grades are right")


@exercise("compute acc_correlated and acc_independent")
def check_site_shortcut(acc_correlated: float, acc_independent: float) -> bool:
    """Chapter 0, exercise 3: the site predicts the grade only when they are correlated."""
    if not (_finite(acc_correlated) and _finite(acc_independent)):
        raise ExerciseError("give two accuracies between 0 and 1")
    if acc_correlated < 0.5:
        raise ExerciseError(f"with site_correlation=1.0 the site should predict the grade well, got "
                            f"{acc_correlated:.2f}; did you map each site to its most frequent grade?")
    if acc_independent > 0.4:
        raise ExerciseError(f"with site_correlation=0.0 the site should be near chance (0.2), got {acc_independent:.2f}")
    return passed(f"the site alone predicts the grade ({acc_correlated:.2f}) only when correlated "
                  f"({acc_independent:.2f} otherwise): a model can score well by recognising the camera")


# --------------------------------------------------------------------------- chapter 1

@exercise("write nt_xent")
def check_nt_xent(fn) -> bool:
    """Chapter 1, exercise 1: ``fn(z1, z2, temperature)`` equals the library NT-Xent on random inputs."""
    import torch
    from .methods.simclr import nt_xent_loss
    for batch, dim, temp in [(4, 8, 0.1), (16, 32, 0.5), (7, 3, 1.0)]:
        g = torch.Generator().manual_seed(batch)
        z1, z2 = torch.randn(batch, dim, generator=g), torch.randn(batch, dim, generator=g)
        got, want = float(fn(z1, z2, temp)), float(nt_xent_loss(z1, z2, temp))
        if abs(got - want) > 1e-4 * max(1.0, abs(want)):
            hint = ("Normalise the embeddings, divide the similarities by the temperature, exclude each "
                    "view's similarity with itself, and average the cross-entropy over all 2N views.")
            raise ExerciseError(f"with batch {batch} and temperature {temp}: got {got:.5f}, "
                                f"expected {want:.5f}. {hint}")
    return passed("your NT-Xent matches the library's on three batch sizes and temperatures")


def _mean_score(scores) -> float:
    import numpy as np
    vals = list(scores.values()) if isinstance(scores, dict) else list(scores)
    if not vals or not all(_finite(v) for v in vals):
        raise ExerciseError("give one finite balanced accuracy per diagnosis")
    return float(np.mean(vals))


@exercise("pretrain with the label-destroying views")
def check_learned_invariance(answer: str, safe_scores, destroyed_scores, tolerance: float = 0.01) -> bool:
    """Chapter 1, exercise 2: did invariance to label-destroying views cost the diagnoses? Checked against the run.

    ``safe_scores`` / ``destroyed_scores``: linear-probe balanced accuracy per
    diagnosis of the encoder pretrained with safe and with destroying views;
    ``answer``: "yes" if pretraining with the destroying views lowered them.
    """
    safe, bad = _mean_score(safe_scores), _mean_score(destroyed_scores)
    drop = safe - bad
    if answer not in ("yes", "no"):
        raise ExerciseError("answer 'yes' or 'no'")
    if abs(drop) < tolerance:
        return passed(f"the two encoders are within {tolerance} ({safe:.3f} vs {bad:.3f}): too close to call "
                      "at this budget, either answer is fair — say so in your own words")
    truth = "yes" if drop > 0 else "no"
    if answer != truth:
        raise ExerciseError(f"look again at your numbers: safe views {safe:.3f}, destroying views {bad:.3f} "
                            "(mean over the diagnoses)")
    return passed(f"right: mean probe {safe:.3f} with safe views vs {bad:.3f} with destroying views "
                  f"({'a drop' if drop > 0 else 'no drop'} of {abs(drop):.3f})")


@exercise("switch the camera augmentations off")
def check_colour_shortcut(no_camera_views, site_with: float, site_without: float) -> bool:
    """Chapter 1, exercise 3: views without any camera change, and the site probe of both encoders."""
    changes = {k: getattr(no_camera_views, k, None) for k in ("gain", "gamma", "noise", "blur_p")}
    left = [k for k, v in changes.items() if v != 0]
    if left:
        raise ExerciseError(f"your views still change the camera: {', '.join(left)} should be 0")
    if not (_finite(site_with) and _finite(site_without)):
        raise ExerciseError("give the two site-probe balanced accuracies")
    word = "less" if site_with < site_without else "more"
    return passed(f"views right; the encoder pretrained with camera changes encodes the site {word} "
                  f"({site_with:.3f} vs {site_without:.3f} without them)")


@exercise("read the temperature sweep")
def check_temperature_answer(best: float, reading: str, temperatures, scores) -> bool:
    """Chapter 1, exercise 4: the best temperature of *your* sweep, and where it lies (checked against the run).

    ``reading``: "lowest", "intermediate" or "highest" — where the best τ lies in the swept range.
    """
    import numpy as np
    temps = np.asarray(temperatures, float)
    order = np.argsort(temps)
    temps, scores = temps[order], np.asarray(scores, float)[order]
    i = int(np.argmax(scores))
    want = float(temps[i])
    where = "lowest" if i == 0 else "highest" if i == len(temps) - 1 else "intermediate"
    if reading not in ("lowest", "intermediate", "highest"):
        raise ExerciseError("reading is 'lowest', 'intermediate' or 'highest'")
    if not _finite(best) or abs(float(best) - want) > 1e-9:
        raise ExerciseError(f"your sweep scored {dict(zip(temps.tolist(), np.round(scores, 3).tolist()))}: "
                            "which τ has the highest probe?")
    if reading != where:
        raise ExerciseError(f"τ = {want} is the {where} of the temperatures you swept")
    spread = float(scores.max() - scores.min())
    return passed(f"right: τ = {want} ({where}); the sweep spans {spread:.3f} of balanced accuracy")


# --------------------------------------------------------------------------- chapter 2

def _dino_inputs(batch: int, k: int, n_global: int, n_local: int, seed: int):
    import torch
    g = torch.Generator().manual_seed(seed)
    student = [torch.randn(batch, k, generator=g) for _ in range(n_global + n_local)]
    teacher = [torch.randn(batch, k, generator=g) for _ in range(n_global)]
    return student, teacher, torch.randn(1, k, generator=g) * 0.5


@exercise("write the DINO loss")
def check_dino_loss(fn) -> bool:
    """Chapter 2, exercise 1: ``fn(student_out, teacher_out, center, t_student, t_teacher)`` equals the library's
    :func:`helpers.methods.dino.dino_loss` for several batch sizes, crop counts and temperatures."""
    from .methods.dino import dino_loss
    cases = [(4, 16, 2, 0, 0.1, 0.04), (8, 32, 2, 4, 0.1, 0.07), (5, 10, 2, 6, 0.2, 0.1)]
    for batch, k, ng, nl, ts, tt in cases:
        s, t, c = _dino_inputs(batch, k, ng, nl, batch + nl)
        got, want = float(fn(s, t, c, ts, tt)), float(dino_loss(s, t, c, ts, tt))
        if abs(got - want) > 1e-4 * max(1.0, abs(want)):
            hints = []
            if abs(got - float(dino_loss(s, t, c * 0, ts, tt))) < 1e-4 * max(1.0, abs(want)):
                hints.append("the teacher's outputs are centred (subtract the centre) before the softmax")
            hints.append("sharpen the teacher with t_teacher, the student with t_student; skip the pairs where the "
                         "student sees the teacher's own view; average over the remaining pairs")
            raise ExerciseError(f"with {ng} global + {nl} local crops, batch {batch}: got {got:.5f}, expected "
                                f"{want:.5f}. Hint: " + "; ".join(hints))
    return passed("your DINO loss matches the library's for 0, 4 and 6 local crops and three temperature pairs")


@exercise("write the centre update")
def check_center_update(fn) -> bool:
    """Chapter 2, exercise 2: ``fn(center, teacher_out, momentum)`` is DINO's EMA of the teacher's batch mean."""
    import torch
    from .methods.dino import update_center
    for batch, k, m in [(4, 8, 0.9), (16, 32, 0.5), (3, 5, 0.99)]:
        _, t, c = _dino_inputs(batch, k, 2, 0, k)
        got, want = fn(c.clone(), [x.clone() for x in t], m), update_center(c, t, m)
        if not isinstance(got, torch.Tensor) or got.shape != want.shape:
            raise ExerciseError(f"return the new centre, a tensor of shape {tuple(want.shape)}")
        if not torch.allclose(got, want, atol=1e-6):
            if torch.allclose(got, c * (1 - m) + torch.cat(t).mean(0, keepdim=True) * m, atol=1e-6):
                raise ExerciseError("the momentum weighs the old centre: m · centre + (1 − m) · batch mean")
            raise ExerciseError("average the teacher outputs of *all* global views over the batch, then "
                                "centre ← m · centre + (1 − m) · that mean")
    return passed("your centre update matches the library's (three batch sizes and momenta)")


@exercise("predict the two collapses")
def check_collapse_prediction(no_centring: str, no_sharpening: str) -> bool:
    """Chapter 2, exercise 3 (before the ablation runs): what does the teacher's output collapse to?

    Each answer is ``"one dimension"`` (every image the same prototype: entropy → 0) or ``"uniform"``
    (every prototype equally likely: entropy → log K).
    """
    allowed = ("one dimension", "uniform")
    for name, a in (("no_centring", no_centring), ("no_sharpening", no_sharpening)):
        if a not in allowed:
            raise ExerciseError(f"{name} is one of {allowed}")
    if no_centring != "one dimension":
        raise ExerciseError("without centring nothing stops one prototype from winning for every image: "
                            "what does the softmax of a dominant logit look like?")
    if no_sharpening != "uniform":
        raise ExerciseError("centring subtracts the mean logit; with a temperature as soft as the student's, "
                            "what is left of the differences between prototypes?")
    return passed("right: centring alone drives the output to uniform, sharpening alone to one dimension; "
                  "DINO balances the two. The ablations below measure it.")


@exercise("read the attention maps")
def check_attention_reading(structure: str, shares: dict) -> bool:
    """Chapter 2, exercise 4: which structure the trained ViT's CLS token attends to most, relative to its area.

    ``shares``: structure → ratio of attention share to area share (``attention_share(...)["ratio"]``) for
    ``"optic disc"`` and ``"lesions"``; ``structure``: the one with the larger ratio.
    """
    if set(shares) != {"optic disc", "lesions"} or not all(_finite(v) for v in shares.values()):
        raise ExerciseError("shares maps 'optic disc' and 'lesions' to their attention/area ratios (numbers)")
    want = max(shares, key=shares.get)
    if structure != want:
        raise ExerciseError(f"compare the two ratios: {', '.join(f'{k} {v:.2f}' for k, v in shares.items())}")
    return passed(f"right: {want} — {shares[want]:.2f}× the attention its area would get by chance")


# --------------------------------------------------------------------------- chapter 3

@exercise("write random_masking")
def check_random_masking(fn) -> bool:
    """Chapter 3, exercise 1: ``fn(x, mask_ratio)`` → ``(kept, mask, ids_restore)`` with MAE's semantics.

    Checked on several grids and ratios: ``len_keep = int(L · (1 − ratio))`` tokens kept per sample, mask 1 =
    removed, ``ids_restore`` a permutation whose inverse lists the kept tokens first (in the order of
    ``kept``), and a different draw for every sample.
    """
    import torch
    for b, n, d, ratio in [(4, 36, 8, 0.75), (3, 36, 4, 0.9), (2, 49, 6, 0.5), (5, 16, 3, 0.0)]:
        x = torch.randn(b, n, d, generator=torch.Generator().manual_seed(n + b))
        torch.manual_seed(b)
        out = fn(x.clone(), ratio)
        if not isinstance(out, (tuple, list)) or len(out) != 3:
            raise ExerciseError("return three tensors: (kept, mask, ids_restore)")
        kept, mask, ids_restore = out
        len_keep = int(n * (1 - ratio))
        if tuple(kept.shape) != (b, len_keep, d):
            hint = " (int(), not round(): MAE truncates)" if kept.shape[1] == round(n * (1 - ratio)) else ""
            raise ExerciseError(f"with L = {n} and ratio {ratio}, keep len_keep = int(L · (1 − ratio)) = {len_keep} "
                                f"tokens per sample; got kept of shape {tuple(kept.shape)}{hint}")
        if tuple(mask.shape) != (b, n) or tuple(ids_restore.shape) != (b, n):
            raise ExerciseError(f"mask and ids_restore have shape (B, L) = {(b, n)}")
        if not torch.equal(mask.sum(1), torch.full((b,), float(n - len_keep), dtype=mask.dtype)):
            if torch.equal(mask.sum(1), torch.full((b,), float(len_keep), dtype=mask.dtype)):
                raise ExerciseError("mask is 1 where a token is *removed* and 0 where it is kept")
            raise ExerciseError(f"each row of mask has L − len_keep = {n - len_keep} ones (removed tokens)")
        if not torch.equal(torch.sort(ids_restore, 1).values, torch.arange(n).expand(b, n)):
            raise ExerciseError("ids_restore must be a permutation of 0 … L−1 in every row (argsort of the shuffle)")
        ids_shuffle = torch.argsort(ids_restore, 1)  # undoing ids_restore gives the shuffle
        want = torch.gather(x, 1, ids_shuffle[:, :len_keep, None].expand(-1, -1, d))
        if not torch.allclose(kept, want):
            raise ExerciseError("kept must be x gathered at the first len_keep positions of the shuffle, and "
                                "ids_restore = argsort(ids_shuffle) so that it undoes that shuffle")
        if not torch.equal(torch.gather(mask, 1, ids_shuffle), (torch.arange(n) >= len_keep).float().expand(b, n)
                           .to(mask.dtype)):
            raise ExerciseError("mask must be 0 exactly at the kept tokens: build it in shuffled order "
                                "(len_keep zeros, then ones) and un-shuffle it with ids_restore")
        if b > 1 and 0 < ratio and all(torch.equal(ids_restore[0], r) for r in ids_restore[1:]):
            raise ExerciseError("every sample needs its own random order: draw noise of shape (B, L)")
    return passed("your random_masking keeps int(L·(1−ratio)) tokens per sample, marks the removed ones with 1 "
                  "and ids_restore undoes the shuffle (four grids and ratios)")


@exercise("predict the loss at mask ratio 0")
def check_ratio_zero_loss(answer, measured) -> bool:
    """Chapter 3, exercise 2: the MAE loss when nothing is masked; ``measured`` is the chapter's own computation."""
    if not _finite(answer):
        raise ExerciseError("answer with a number")
    if abs(float(answer)) > 1e-6:
        raise ExerciseError("which patches does the MAE loss average over? How many of them are there at ratio 0?")
    if abs(float(measured)) > 1e-6:
        raise ExerciseError(f"your prediction is right, but the measured loss is {float(measured):.4g}: did you "
                            "compute it with mask_ratio=0?")
    return passed("right: the loss counts removed patches only, and at ratio 0 there are none — the loss is 0 "
                  "whatever the decoder outputs, so nothing would be learned. Masking *is* the task.")


@exercise("set a layer-decay schedule")
def check_layer_decay(fn) -> bool:
    """Chapter 3, exercise 3: ``fn(base_lr, decay, n_blocks)`` → one learning rate per
    :func:`helpers.transfer.vit_layer_groups` group, as :func:`helpers.transfer.layer_decay_lrs`."""
    import numpy as np
    from .transfer import layer_decay_lrs
    for base, decay, n in [(1e-3, 0.65, 3), (5e-3, 0.75, 12), (2e-4, 0.5, 1)]:
        got = np.asarray(fn(base, decay, n), float).ravel()
        want = layer_decay_lrs(base, decay, n)
        if got.shape != want.shape:
            raise ExerciseError(f"{n} blocks give {n + 2} groups (embeddings, the blocks, the head): "
                                f"return {n + 2} learning rates, got {got.size}")
        if not np.allclose(got, want, rtol=1e-6):
            if np.allclose(got, want[::-1], rtol=1e-6):
                raise ExerciseError("reversed: the head (last group) trains at base_lr, the patch embedding "
                                    "(first group) at the smallest rate")
            if np.allclose(got, want * decay, rtol=1e-6) or np.allclose(got, want / decay, rtol=1e-6):
                raise ExerciseError("off by one layer: group i gets base_lr · decay^(n_blocks + 1 − i), so the "
                                    "head (i = n_blocks + 1) gets base_lr itself")
            raise ExerciseError(f"for base_lr={base}, decay={decay}, {n} blocks expected {np.round(want, 8)}")
    return passed("your schedule matches the library's: the head at base_lr, each layer below × decay")
