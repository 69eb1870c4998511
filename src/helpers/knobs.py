"""The read-only knobs of a profile (book page "How to run this book"): a group of knobs that reads as attributes
or keys and fails loudly on a missing one, and the resolved profile that holds them (:mod:`helpers.profiles`
loads it)."""
from __future__ import annotations


class MissingKnob(KeyError, AttributeError):
    """A knob the profile does not have; the message names the profile, the group and the knobs there are."""

    def __str__(self):
        return self.args[0]


class Knobs(dict):
    """A dict whose keys read as attributes (``P.data.n_train``) or as keys (``K["epochs"]``).

    A missing knob raises :class:`MissingKnob` (a ``KeyError`` and an ``AttributeError``) that names the
    profile and the group it was looked up in and lists the knobs there are, so a typo in a chapter or a
    recipe fails loudly instead of silently using a default.
    """

    def __init__(self, *args, where: str = "", **kw):
        super().__init__(*args, **kw)
        object.__setattr__(self, "where", where)

    def __missing__(self, key):
        where = getattr(self, "where", "") or "this group"
        raise MissingKnob(f"no knob {key!r} in {where}; its knobs: {', '.join(sorted(map(str, self)))}")

    def __getattr__(self, key):
        if key.startswith("__"):
            raise AttributeError(key)
        value = self[key]
        if isinstance(value, dict) and not isinstance(value, Knobs):
            return Knobs(value, where=f"{getattr(self, 'where', '')} › {key}".lstrip(" ›"))
        return value

    def __setattr__(self, key, value):
        raise AttributeError("profiles are read-only; choose another profile or copy the knob")


class Profile:
    """A resolved profile: its ``name``, what was asked for (``requested``) and its knobs."""

    def __init__(self, name: str, requested: str, knobs: dict):
        self.name = name
        self.requested = requested
        self.knobs = Knobs(knobs, where=f"profile {name!r}")

    def __getattr__(self, key):
        if key in ("name", "requested", "knobs"):
            raise AttributeError(key)
        return getattr(self.knobs, key)

    def __getitem__(self, key):
        return self.knobs[key]

    def __repr__(self):
        via = f" (from {self.requested!r})" if self.requested != self.name else ""
        return f"Profile({self.name!r}{via})"

    def table(self, *groups: str) -> list[tuple[str, str]]:
        """Rows ``(knob, value)`` for the top-level knobs, ``data`` and the named groups."""
        rows = [("profile", self.name + (f" (from {self.requested})" if self.requested != self.name else ""))]
        for key, value in self.knobs.items():
            if not isinstance(value, dict):
                rows.append((key, str(value)))
        for group in ("data",) + tuple(groups):
            if group not in self.knobs:
                raise KeyError(f"profile has no knob group {group!r}; groups: "
                               f"{', '.join(k for k, v in self.knobs.items() if isinstance(v, dict))}")
            for key, value in self.knobs[group].items():
                rows.append((f"{group}.{key}", str(value)))
        return rows

    def show(self, *groups: str) -> None:
        """Print every knob this run uses: the shared ones and the chapter's ``groups``."""
        rows = self.table(*groups)
        width = max(len(k) for k, _ in rows)
        print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))
