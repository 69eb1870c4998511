"""Checks for chapter 1's exercises (see :mod:`helpers.checks`)."""
from __future__ import annotations

import numpy as np
import torch

from ..methods.simclr import nt_xent_loss
from .core import ExerciseError, _call, _finite, _scalar, exercise, passed


@exercise("write nt_xent")
def check_nt_xent(fn) -> bool:
    """Chapter 1, exercise 1: ``fn(z1, z2, temperature)`` equals the library NT-Xent on random inputs."""
    for batch, dim, temp in [(4, 8, 0.1), (16, 32, 0.5), (7, 3, 1.0)]:
        g = torch.Generator().manual_seed(batch)
        z1, z2 = torch.randn(batch, dim, generator=g), torch.randn(batch, dim, generator=g)
        out = _call(fn, z1, z2, temp, called=f"fn(z1, z2, temperature) with z1, z2 two ({batch}, {dim}) tensors "
                    "(the two views' embeddings) and temperature a float")
        got = _scalar(out, "return the loss of the batch, one number (a 0-d tensor), averaged over all 2N views")
        want = float(nt_xent_loss(z1, z2, temp))
        if not abs(got - want) <= 1e-4 * max(1.0, abs(want)):  # `not <=`: a NaN is wrong too
            hint = ("Normalise the embeddings, divide the similarities by the temperature, exclude each "
                    "view's similarity with itself, and average the cross-entropy over all 2N views.")
            raise ExerciseError(f"with batch {batch} and temperature {temp}: got {got:.5f}, "
                                f"expected {want:.5f}. {hint}")
    return passed("your NT-Xent matches the library's on three batch sizes and temperatures")


def _mean_score(scores) -> float:
    if isinstance(scores, (str, bytes)) or not hasattr(scores, "__iter__"):
        vals = []
    else:
        vals = list(scores.values()) if isinstance(scores, dict) else list(scores)
    if not vals or not all(_finite(v) for v in vals):
        raise ExerciseError("give one finite balanced accuracy per diagnosis: a dict {diagnosis: score}, "
                            "as diagnosis_scores returns")
    return float(np.mean([float(v) for v in vals]))


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
def check_colour_shortcut(no_camera_views, site_with: float, site_without: float, encodes_more: str, colour,
                          tolerance: float = 0.01) -> bool:
    """Chapter 1, exercise 3: views without any camera change, the site probe of both encoders read from the run's
    ``colour`` table (rows: tasks; columns ``"SimCLR (camera changes)"`` and ``"no camera change"``), and which of
    them encodes the camera more: ``encodes_more`` is ``"with"`` (the encoder pretrained with camera changes),
    ``"without"``, or ``"neither"`` when the two are within ``tolerance``."""
    changes = {k: getattr(no_camera_views, k, None) for k in ("gain", "gamma", "noise", "blur_p")}
    if not any(hasattr(no_camera_views, k) for k in changes):
        raise ExerciseError("no_camera_views is a views.FundusViews(...) with the camera changes set to 0")
    left = [k for k, v in changes.items() if v != 0]
    if left:
        raise ExerciseError(f"your views still change the camera: {', '.join(left)} should be 0")
    if not (_finite(site_with) and _finite(site_without)):
        raise ExerciseError("give the two site-probe balanced accuracies, as numbers")
    want_with, want_without = _site_probes(colour)
    if abs(float(site_with) - want_without) < 1e-9 and abs(float(site_without) - want_with) < 1e-9 \
            and want_with != want_without:
        raise ExerciseError("you swapped the two: site_with is the encoder pretrained *with* camera changes")
    if abs(float(site_with) - want_with) > 1e-9 or abs(float(site_without) - want_without) > 1e-9:
        raise ExerciseError("read both numbers from the site_id row of the colour table: the columns are "
                            "'SimCLR (camera changes)' and 'no camera change'")
    if encodes_more not in ("with", "without", "neither"):
        raise ExerciseError("encodes_more is 'with', 'without' or 'neither'")
    gap = want_with - want_without
    truth = "neither" if abs(gap) < tolerance else "with" if gap > 0 else "without"
    if encodes_more != truth:
        raise ExerciseError(f"compare the two site probes again: {want_with:.3f} with camera changes, "
                            f"{want_without:.3f} without (closer than {tolerance} counts as neither)")
    return passed(f"right: with camera changes {want_with:.3f}, without {want_without:.3f} — "
                  + ("too close to tell apart at this budget" if truth == "neither" else
                     f"the encoder pretrained {truth} camera changes encodes the site more"))


def _site_probes(colour):
    """The site probe of the encoders pretrained with and without camera changes, from the run's ``colour`` table."""
    try:
        return (float(colour.loc["site_id", "SimCLR (camera changes)"]),
                float(colour.loc["site_id", "no camera change"]))
    except (AttributeError, KeyError, TypeError, ValueError):
        raise ExerciseError("colour is the run's table (a DataFrame): one row per task, among them 'site_id', "
                            "and the columns 'SimCLR (camera changes)' and 'no camera change'") from None


def _sweep(temperatures, scores):
    """The swept temperatures and their probe scores as two float arrays sorted by temperature."""
    try:
        temps, scores = np.asarray(temperatures, float), np.asarray(scores, float)
    except (TypeError, ValueError):
        temps = scores = np.zeros(0)
    if temps.ndim != 1 or temps.shape != scores.shape or not len(temps):
        raise ExerciseError("temperatures and scores are two lists of the same length: the τ you swept and the "
                            "probe score of each, as list(sweep) and list(sweep.values())")
    order = np.argsort(temps)
    return temps[order], scores[order]


@exercise("read the temperature sweep")
def check_temperature_answer(best: float, reading: str, temperatures, scores) -> bool:
    """Chapter 1, exercise 4: the best temperature of *your* sweep, and where it lies (checked against the run).

    ``reading``: "lowest", "intermediate" or "highest" — where the best τ lies in the swept range.
    """
    temps, scores = _sweep(temperatures, scores)
    i = int(np.argmax(scores))
    want = float(temps[i])
    where = "lowest" if i == 0 else "highest" if i == len(temps) - 1 else "intermediate"
    if reading not in ("lowest", "intermediate", "highest"):
        raise ExerciseError("reading is 'lowest', 'intermediate' or 'highest'")
    if not _finite(best):
        raise ExerciseError(f"best is one temperature of your sweep, a number such as {temps[0]}; got {best!r}")
    if abs(float(best) - want) > 1e-9:
        raise ExerciseError(f"your sweep scored {dict(zip(temps.tolist(), np.round(scores, 3).tolist()))}: "
                            "which τ has the highest probe?")
    if reading != where:
        raise ExerciseError(f"τ = {want} is the {where} of the temperatures you swept")
    spread = float(scores.max() - scores.min())
    return passed(f"right: τ = {want} ({where}); the sweep spans {spread:.3f} of balanced accuracy")
