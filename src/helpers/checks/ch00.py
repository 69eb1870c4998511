"""Checks for chapter 0's exercises (see :mod:`helpers.checks`)."""
from __future__ import annotations

import itertools

from ..synthretina import dr_grade_rule
from .core import ExerciseError, _call, _digest, _finite, exercise, passed


@exercise("write my_dr_grade")
def check_dr_rule(fn) -> bool:
    """Chapter 0, exercise 1: ``fn(counts) -> grade`` agrees with SynthRetina's DR rule."""
    for ma, hm, ex, nv in itertools.product([0, 1, 5], [0, 1, 9, 10, 15], [0, 3], [0, 1]):
        counts = {"n_microaneurysms": ma, "n_haemorrhages": hm, "n_exudates": ex, "n_neovascularisation": nv}
        want = dr_grade_rule(ma, hm, ex, nv)
        got = _call(fn, counts, called=f"fn(counts), with counts one dict like {counts}")
        if _grade(got) is None:
            raise ExerciseError(f"return one grade, a whole number from 0 to 4; for {counts} you returned {got!r}")
        if _grade(got) != want:
            raise ExerciseError(f"for {counts} the grade is {want}, you returned {got}. "
                                "Check the rules from grade 4 downwards: the most severe finding decides.")
    return passed("your DR rule agrees with SynthRetina's on 60 combinations of findings")


def _grade(value):
    """A returned grade as an int, or None when it is not a whole number from 0 to 4."""
    if isinstance(value, (str, bytes)):
        return None
    try:
        g = float(value)
    except (TypeError, ValueError, RuntimeError):
        return None
    return int(g) if g in (0, 1, 2, 3, 4) else None


@exercise("fill in hr_answers")
def check_hr_answers(answers: dict) -> bool:
    """Chapter 0, exercise 2: the HR grades of three described eyes (answers stored hashed)."""
    want = {'a': 'd9b9fb85d6a52f42', 'b': 'd9a3ab15e7730fff', 'c': 'f7652537c79edd74'}
    if not isinstance(answers, dict) or set(answers) != set(want):
        raise ExerciseError("hr_answers is a dict with one grade per eye: {'a': ..., 'b': ..., 'c': ...}")
    bad = [k for k, v in answers.items() if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 4]
    if bad:
        raise ExerciseError(f"each grade is a whole number from 0 to 4 (HR grades); look at {', '.join(sorted(bad))}")
    wrong = [k for k in want if _digest(f"ch00-hr:{k}:{answers.get(k)}") != want[k]]
    if wrong:
        raise ExerciseError(f"not yet right: {', '.join(wrong)}. Remember: the highest finding present decides, "
                            "whether or not the lower ones are present.")
    return passed("all three HR grades are right")


@exercise("compute acc_correlated and acc_independent")
def check_site_shortcut(acc_correlated: float, acc_independent: float) -> bool:
    """Chapter 0, exercise 3: the site predicts the grade only when they are correlated."""
    if not all(_finite(a) and 0 <= float(a) <= 1 for a in (acc_correlated, acc_independent)):
        raise ExerciseError("give two accuracies between 0 and 1, as numbers (0.85, not 85 or '0.85')")
    acc_correlated, acc_independent = float(acc_correlated), float(acc_independent)
    if acc_correlated < 0.5:
        raise ExerciseError(f"with site_correlation=1.0 the site should predict the grade well, got "
                            f"{acc_correlated:.2f}; did you map each site to its most frequent grade?")
    if acc_independent > 0.4:
        raise ExerciseError(f"with site_correlation=0.0 the site should be near chance (0.2), got {acc_independent:.2f}")
    return passed(f"the site alone predicts the grade ({acc_correlated:.2f}) only when correlated "
                  f"({acc_independent:.2f} otherwise): a model can score well by recognising the camera")
