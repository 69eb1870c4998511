"""What every check shares: the error, the ✅/⏳ lines, the decorator that reports a stub as pending."""
from __future__ import annotations

import functools
import hashlib
import math

import torch


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
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _finite(x) -> bool:
    """Whether ``x`` is one finite number (a string or a bool is not, even if ``float()`` would take it)."""
    if isinstance(x, (str, bytes, bool)):
        return False
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError, RuntimeError):
        return False


def _describe(value) -> str:
    """What a student's value is, for a message: "a list", "an ndarray of shape (4,)"."""
    name, shape = type(value).__name__, getattr(value, "shape", None)
    shown = ("an " if name[0] in "aeiouAEIOU" else "a ") + name
    try:
        return shown + (f" of shape {tuple(shape)}" if shape is not None else "")
    except TypeError:  # a `shape` that is not a size (numpy's np.shape function, say)
        return shown


def _call(fn, *args, called: str, who: str = "your function"):
    """``fn(*args)``, where an error raised inside ``fn`` becomes an :class:`ExerciseError` saying how the check
    calls it (``called``). A stub's ``NotImplementedError`` passes through, so it is still reported as pending."""
    if not callable(fn):
        raise ExerciseError("pass the function itself (its name, without calling it), not what it returns; "
                            f"got {_describe(fn)}")
    try:
        return fn(*args)
    except (NotImplementedError, ExerciseError):
        raise
    except Exception as e:
        raise ExerciseError(f"{who} raised {type(e).__name__}: {e}. It is called as {called}") from e


def _scalar(value, expected: str) -> float:
    """A returned result as one float, or an :class:`ExerciseError` with ``expected`` and what came back."""
    if isinstance(value, (str, bytes)):
        raise ExerciseError(f"{expected}; got the text {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError, RuntimeError):
        raise ExerciseError(f"{expected}; got {_describe(value)}") from None


def _tensor(value, shape, expected: str):
    """A returned tensor (as float32, to compare with the library's), or an :class:`ExerciseError` with
    ``expected`` when it is not a tensor or, with ``shape`` given, not of that shape."""
    if not torch.is_tensor(value) or (shape is not None and tuple(value.shape) != tuple(shape)):
        raise ExerciseError(f"{expected}; got {_describe(value)}")
    return value.detach().float()
