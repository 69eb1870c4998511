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
