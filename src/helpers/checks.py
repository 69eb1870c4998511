"""Checks for the chapters' exercises: each tells the student whether an answer is right.

A check prints a line starting with ✅ when the answer is right and raises
:class:`ExerciseError` with a hint when it is not; an exercise left as
``raise NotImplementedError`` is reported as not attempted yet. The chapter
that poses each exercise is named in the check's docstring. Instructors: see
the "For instructors" page.
"""
from __future__ import annotations

import math


class ExerciseError(AssertionError):
    """An exercise answer that is not right yet; the message says what to look at."""


def not_attempted(exc: BaseException) -> bool:
    """True when the student's code still raises ``NotImplementedError`` (the stub)."""
    return isinstance(exc, NotImplementedError)


def passed(message: str) -> bool:
    print(f"✅ {message}")
    return True


def pending(message: str) -> bool:
    print(f"⏳ not attempted yet: {message}")
    return False


def check_close(name: str, got, expected, rtol: float = 1e-4, atol: float = 1e-5, hint: str = "") -> bool:
    """Numbers (or arrays) ``got`` match ``expected`` within tolerance; else an :class:`ExerciseError`."""
    import numpy as np
    got_a = np.asarray(got, dtype=float)
    exp_a = np.asarray(expected, dtype=float)
    if got_a.shape != exp_a.shape:
        raise ExerciseError(f"{name}: shape {got_a.shape}, expected {exp_a.shape}. {hint}".strip())
    if not np.all(np.isfinite(got_a)):
        raise ExerciseError(f"{name}: got a non-finite value ({got_a.ravel()[:4]}). {hint}".strip())
    if not np.allclose(got_a, exp_a, rtol=rtol, atol=atol):
        diff = float(np.max(np.abs(got_a - exp_a)))
        raise ExerciseError(f"{name}: off by up to {diff:.3g} (got {got_a.ravel()[:4]}, expected "
                            f"{exp_a.ravel()[:4]}). {hint}".strip())
    return passed(f"{name} matches the reference")


def check_true(name: str, condition: bool, detail: str = "", hint: str = "") -> bool:
    """A yes/no check with an explanation either way."""
    if not condition:
        raise ExerciseError(f"{name}: not yet. {detail} {hint}".strip())
    return passed(f"{name}" + (f" — {detail}" if detail else ""))


def _finite(x) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


# --------------------------------------------------------------------------- chapter 0

def check_dr_rule(fn) -> bool:
    """Chapter 0, exercise 1: ``fn(counts) -> grade`` agrees with SynthRetina's DR rule."""
    import itertools
    from .synthretina import dr_grade_rule
    try:
        for ma, hm, ex, nv in itertools.product([0, 1, 5], [0, 1, 9, 10, 15], [0, 3], [0, 1]):
            counts = {"n_microaneurysms": ma, "n_haemorrhages": hm, "n_exudates": ex, "n_neovascularisation": nv}
            want, got = dr_grade_rule(ma, hm, ex, nv), fn(counts)
            if got != want:
                raise ExerciseError(f"for {counts} the grade is {want}, you returned {got}. "
                                    "Check the rules from grade 4 downwards: the most severe finding decides.")
    except NotImplementedError as exc:
        if not_attempted(exc):
            return pending("write my_dr_grade")
        raise
    return passed("your DR rule agrees with SynthRetina's on 60 combinations of findings")


def check_hr_answers(answers: dict) -> bool:
    """Chapter 0, exercise 2: the HR grades of three described eyes."""
    want = {"a": 2, "b": 3, "c": 4}
    wrong = [k for k in want if answers.get(k) != want[k]]
    if wrong:
        raise ExerciseError(f"not yet right: {', '.join(wrong)}. Remember: the highest finding present decides, "
                            "whether or not the lower ones are present.")
    return passed("all three HR grades are right")


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
