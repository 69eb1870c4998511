"""Checks for chapter 6's exercises (see :mod:`helpers.checks`)."""
from __future__ import annotations

import numpy as np

from .core import ExerciseError, _call, _describe, _finite, _scalar, exercise, passed


@exercise("fold the standardisation into the head")
def check_fold(fn) -> bool:
    """Chapter 6, exercise 1: ``fn(mean, scale, coef, intercept)`` → ``(weight, bias)`` of one linear layer on raw
    features equal to ``coef · (x − mean) / scale + intercept`` (what :func:`helpers.transfer.probe_layer` does)."""
    rng = np.random.default_rng(6)
    for k, d in ((1, 5), (4, 7)):
        mean, scale = rng.normal(size=d), rng.uniform(0.3, 3, d)
        coef, intercept = rng.normal(size=(k, d)), rng.normal(size=k)
        out = _call(fn, mean.copy(), scale.copy(), coef.copy(), intercept.copy(),
                    called=f"fn(mean, scale, coef, intercept) with mean and scale two ({d},) arrays, coef a ({k}, {d}) "
                    f"array and intercept a ({k},) one")
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise ExerciseError(f"return two arrays: (weight, bias); got {_describe(out)}"
                                + (f" of {len(out)}" if isinstance(out, (tuple, list)) else ""))
        try:
            w, b = (np.asarray(v, float) for v in out)
        except (TypeError, ValueError, RuntimeError):
            raise ExerciseError(f"return two arrays of numbers: (weight, bias), shaped ({k}, {d}) and ({k},)") from None
        x = rng.normal(size=(20, d)) * 2 + 1
        want = ((x - mean) / scale) @ coef.T + intercept
        if w.shape != coef.shape or b.shape != intercept.shape:
            raise ExerciseError(f"weight has the coefficients' shape {coef.shape}, bias the intercept's {intercept.shape}")
        got = x @ w.T + b
        if np.allclose(got, want, atol=1e-8):
            continue
        if np.allclose(x @ (coef * scale).T + b, want, atol=1e-8) or np.allclose(w, coef * scale):
            raise ExerciseError("standardising divides by the scale: the weight is coef / scale")
        if np.allclose(w, coef / scale) and np.allclose(b, intercept):
            raise ExerciseError("the weight is right; the bias must absorb the mean: intercept − weight · mean")
        raise ExerciseError("weight = coef / scale, bias = intercept − weight · mean")
    return passed("right: the probe is one linear layer on the raw features, so LP-FT can start from it exactly")


@exercise("predict which strategy moves the features most")
def check_distortion_prediction(answer: str, measured: dict) -> bool:
    """Chapter 6, exercise 2: which of ``"lp"``, ``"ft"``, ``"lpft"`` moves out-of-distribution features most —
    ``"ft"`` by Kumar et al.'s argument; ``measured`` (mean distortion per strategy) says whether this run agrees."""
    answer = str(answer).strip().lower().replace("-", "")
    if answer not in ("lp", "ft", "lpft"):
        raise ExerciseError('answer "lp", "ft" or "lpft"')
    if answer == "lp":
        raise ExerciseError("LP never changes the encoder: its features do not move at all")
    if answer == "lpft":
        raise ExerciseError("LP-FT starts from a head that already fits: its first gradients are small. Which "
                            "strategy starts from a random head?")
    shown = _describe(measured)
    try:
        measured = dict(measured)
    except (TypeError, ValueError):
        measured = None
    if measured is None or not all(_finite(v) for v in measured.values()):
        raise ExerciseError("measured is the run's mean distortion per strategy, a dict {'lp': ..., 'ft': ..., "
                            f"'lpft': ...}} of numbers; got {shown}")
    top = max(measured, key=measured.get) if measured else None
    agree = ("and this run agrees" if top == "ft" else "but this run measured nothing" if top is None else
             f"but in this run {top!r} moved them most — look at the plot")
    return passed(f"right by the argument (a random head sends large, arbitrary gradients into the encoder), {agree}: "
                  + ", ".join(f"{k} {v:.3f}" for k, v in measured.items()))


@exercise("write specificity")
def check_specificity(fn) -> bool:
    """Chapter 6, exercise 3: ``fn(y_true, y_pred)`` → the share of true negatives (label 0) predicted 0."""
    rng = np.random.default_rng(7)
    for n in (10, 200):
        y, p = rng.integers(0, 2, n), rng.integers(0, 2, n)
        y[0], y[1] = 0, 1
        want = float((p[y == 0] == 0).mean())
        out = _call(fn, y.copy(), p.copy(), called=f"fn(y_true, y_pred) with two ({n},) numpy arrays of 0/1 labels")
        got = _scalar(out, "return one number: the share of the healthy eyes (label 0) predicted 0")
        if abs(got - want) < 1e-12:
            continue
        if abs(got - float((p[y == 1] == 1).mean())) < 1e-12:
            raise ExerciseError("that is sensitivity (the diseased eyes found); specificity counts the healthy ones")
        if abs(got - float((p == y).mean())) < 1e-12:
            raise ExerciseError("that is accuracy over every eye; specificity looks at the healthy eyes only")
        raise ExerciseError("specificity = true negatives / (true negatives + false positives)")
    return passed("right: specificity is the share of healthy eyes called healthy")
