"""Checks for chapter 2's exercises (see :mod:`helpers.checks`)."""
from __future__ import annotations

import torch

from ..methods.dino import dino_loss, update_center
from .core import ExerciseError, _call, _finite, _scalar, _tensor, exercise, passed


def _dino_inputs(batch: int, k: int, n_global: int, n_local: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    student = [torch.randn(batch, k, generator=g) for _ in range(n_global + n_local)]
    teacher = [torch.randn(batch, k, generator=g) for _ in range(n_global)]
    return student, teacher, torch.randn(1, k, generator=g) * 0.5


@exercise("write the DINO loss")
def check_dino_loss(fn) -> bool:
    """Chapter 2, exercise 1: ``fn(student_out, teacher_out, center, t_student, t_teacher)`` equals the library's
    :func:`helpers.methods.dino.dino_loss` for several batch sizes, crop counts and temperatures."""
    cases = [(4, 16, 2, 0, 0.1, 0.04), (8, 32, 2, 4, 0.1, 0.07), (5, 10, 2, 6, 0.2, 0.1)]
    for batch, k, ng, nl, ts, tt in cases:
        s, t, c = _dino_inputs(batch, k, ng, nl, batch + nl)
        out = _call(fn, s, t, c, ts, tt, called=f"fn(student_out, teacher_out, center, t_student, t_teacher) with "
                    f"student_out a list of {ng + nl} ({batch}, {k}) tensors (the global views first), teacher_out "
                    f"a list of {ng}, center a (1, {k}) tensor and two float temperatures")
        got = _scalar(out, "return the loss, one number (a 0-d tensor) averaged over the pairs of views")
        want = float(dino_loss(s, t, c, ts, tt))
        if not abs(got - want) <= 1e-4 * max(1.0, abs(want)):  # `not <=`: a NaN is wrong too
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
    for batch, k, m in [(4, 8, 0.9), (16, 32, 0.5), (3, 5, 0.99)]:
        _, t, c = _dino_inputs(batch, k, 2, 0, k)
        want = update_center(c, t, m)
        got = _call(fn, c.clone(), [x.clone() for x in t], m, called=f"fn(center, teacher_out, momentum) with center "
                    f"a (1, {k}) tensor, teacher_out a list of 2 ({batch}, {k}) tensors and momentum a float")
        got = _tensor(got, want.shape, f"return the new centre, a tensor of shape {tuple(want.shape)}")
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


def _ratios(shares, model: str) -> dict:
    """The run's attention/area ratio of the optic disc and the lesions for ``model``, from the ``shares`` table."""
    try:
        run = shares[shares.model == model].set_index("structure")["ratio"]
        return {k: float(run[k]) for k in ("optic disc", "lesions")}
    except (AttributeError, KeyError, TypeError, ValueError):
        raise ExerciseError(f"shares is the run's table (a DataFrame) with the columns model, structure and ratio, "
                            f"and one row per structure ('optic disc', 'lesions') for {model!r}") from None


@exercise("read the attention maps")
def check_attention_reading(structure: str, reading: dict, shares, model: str = "DINO ViT",
                            tolerance: float = 0.05) -> bool:
    """Chapter 2, exercise 4: which structure the trained ViT's CLS token attends to most, relative to its area.

    ``reading``: the student's ratios (attention share / area share) for ``"optic disc"`` and ``"lesions"``, read
    from the run's ``shares`` table (columns ``model``, ``structure``, ``ratio``); ``structure``: the one with the
    larger ratio, or ``"neither"`` when the two ratios are within ``tolerance`` of each other (relative).
    """
    if not isinstance(reading, dict) or set(reading) != {"optic disc", "lesions"} \
            or not all(_finite(v) for v in reading.values()):
        raise ExerciseError("reading maps 'optic disc' and 'lesions' to their attention/area ratios (numbers)")
    want = _ratios(shares, model)
    off = [k for k in reading if abs(float(reading[k]) - want[k]) > 1e-6]
    if off:
        raise ExerciseError(f"take the ratios of the {model} from the shares table (column 'ratio'); "
                            f"{', '.join(off)} differs")
    if structure not in ("optic disc", "lesions", "neither"):
        raise ExerciseError("most_attended is 'optic disc', 'lesions' or 'neither'")
    hi, lo = max(want.values()), min(want.values())
    truth = "neither" if hi - lo < tolerance * hi else max(want, key=want.get)
    if structure != truth:
        raise ExerciseError("compare the two ratios: " + ", ".join(f"{k} {v:.3f}" for k, v in want.items())
                            + f" (within {tolerance:.0%} of each other counts as neither)")
    return passed(f"right: {truth}" + (f" — the two ratios are within {tolerance:.0%} of each other"
                                        if truth == "neither" else
                                        f" — {want[truth]:.2f}× the attention its area would get by chance"))
