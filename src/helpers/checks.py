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


# --------------------------------------------------------------------------- chapter 1

def check_nt_xent(fn) -> bool:
    """Chapter 1, exercise 1: ``fn(z1, z2, temperature)`` equals the library NT-Xent on random inputs."""
    import torch
    from .simclr import nt_xent_loss
    try:
        for batch, dim, temp in [(4, 8, 0.1), (16, 32, 0.5), (7, 3, 1.0)]:
            g = torch.Generator().manual_seed(batch)
            z1, z2 = torch.randn(batch, dim, generator=g), torch.randn(batch, dim, generator=g)
            got, want = float(fn(z1, z2, temp)), float(nt_xent_loss(z1, z2, temp))
            if abs(got - want) > 1e-4 * max(1.0, abs(want)):
                hint = ("Normalise the embeddings, divide the similarities by the temperature, exclude each "
                        "view's similarity with itself, and average the cross-entropy over all 2N views.")
                raise ExerciseError(f"with batch {batch} and temperature {temp}: got {got:.5f}, "
                                    f"expected {want:.5f}. {hint}")
    except NotImplementedError as exc:
        if not_attempted(exc):
            return pending("write nt_xent")
        raise
    return passed("your NT-Xent matches the library's on three batch sizes and temperatures")


def check_destroying_augmentation(bacc_safe: float, bacc_destroyed: float, profile: str = "cpu",
                                  min_drop: float = 0.02) -> bool:
    """Chapter 1, exercise 2: the label-destroying augmentation lowers the probe.

    In the ``smoke`` profile the runs are too short and small for a reliable drop:
    the check then only verifies the two numbers and says so.
    """
    if not (_finite(bacc_safe) and _finite(bacc_destroyed)):
        raise ExerciseError("give two balanced accuracies")
    drop = bacc_safe - bacc_destroyed
    if profile == "smoke":
        print(f"ℹ️ smoke profile: drop {drop:+.3f} measured, but runs this small are noise; "
              "the check applies from the cpu profile up")
        return True
    if drop < min_drop:
        raise ExerciseError(f"the probe only dropped by {drop:+.3f}; choose an augmentation that removes the "
                            "evidence of the grade (the lesions' colour, or the lesions themselves)")
    return passed(f"the probe dropped by {drop:.3f} when the views destroyed the label")


def check_temperature_answer(answer: str, temperatures, scores) -> bool:
    """Chapter 1, exercise 3: read the temperature curve (best temperature and why)."""
    import numpy as np
    best = float(np.asarray(temperatures)[int(np.argmax(scores))])
    if answer not in ("a", "b", "c"):
        raise ExerciseError("answer with 'a', 'b' or 'c'")
    if answer != "b":
        raise ExerciseError("not quite: a very low temperature makes the loss chase the single hardest "
                            "negatives (noisy gradients), a very high one treats all negatives alike; "
                            f"in your sweep the best temperature was {best}")
    return passed(f"right — and in your sweep the best temperature was {best}")
