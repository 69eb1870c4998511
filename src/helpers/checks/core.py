"""What every check shares: the error, the ✅/⏳ lines, the decorator that reports a stub as pending."""
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
