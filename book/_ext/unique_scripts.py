"""Sphinx extension for the book's site: each script once per page.

sphinx-thebe and sphinx-togglebutton (loaded by Jupyter Book 1.x) register
their inline configuration scripts every time the environment reads documents;
our build reads twice (the bibliography), so each appeared twice on every page
— once with no file name, once with an empty one — and the second THEBE copy
failed with "Identifier 'THEBE_JS_URL' has already been declared". The browser
check in tests/test_notebooks.py found it; this keeps the first of each.
"""


def _unique(app, pagename, templatename, context, doctree):
    seen, kept = set(), []
    for script in context.get("script_files", []):
        name = getattr(script, "filename", None) or ""
        key = (str(name), repr(sorted(getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            kept.append(script)
    context["script_files"] = kept


def setup(app):
    app.connect("html-page-context", _unique, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
