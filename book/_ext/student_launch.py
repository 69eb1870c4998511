"""Sphinx extension for the book's site: the launch (rocket) button opens the student copy.

sphinx-book-theme points its Colab button at the page's own source, which for a
chapter is the instructor's copy with the solutions filled in
(``notebooks/01_simclr.ipynb``). A student who presses it should get the copy with
the exercises to solve, ``notebooks/student/01_simclr.ipynb`` — the one the
chapter's "Open in Colab" badge already opens. This runs after the theme has
built its buttons and rewrites the Colab (and any other launch) links of chapter
pages; pages outside ``notebooks/`` keep theirs.
"""
import re

_CHAPTER = re.compile(r"(/|%2F|=)notebooks(/|%2F)(\d\d_[^/%?]+\.ipynb)")


def student_url(url: str) -> str:
    """``url`` with a chapter notebook's path replaced by its student copy's (idempotent)."""
    return _CHAPTER.sub(lambda m: f"{m[1]}notebooks{m[2]}student{m[2]}{m[3]}", url)


def _walk(buttons):
    for b in buttons or []:
        if b.get("type") == "group":
            _walk(b.get("buttons"))
        elif b.get("url"):
            b["url"] = student_url(b["url"])


def _student_launch(app, pagename, templatename, context, doctree):
    if not re.fullmatch(r"notebooks/\d\d_[^/]+", pagename):
        return
    for group in context.get("header_buttons", []):
        if group.get("label") == "launch-buttons":
            _walk(group.get("buttons"))


def setup(app):
    app.connect("html-page-context", _student_launch, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
