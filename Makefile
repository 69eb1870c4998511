# The book's two commands: `make book` and `make test` (see README.md).
# Both create .venv when it is missing and install the project into it; when the
# install stamp is newer than pyproject.toml, nothing is reinstalled.

PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.retina-book-installed
PROFILE ?= auto
# pytest arguments, e.g. `make test PYTEST_ARGS="-k profiles"`
PYTEST_ARGS ?=

# Pip must take torch from the package index: a local `+cpu` wheel on the
# find-links path would break torchvision, so find-links is switched off here.
export PIP_FIND_LINKS :=

.PHONY: venv book test clean-book help student-copies

help:
	@echo "make book   execute every notebook (PROFILE=$(PROFILE)) and build the site"
	@echo "make test   unit tests + every notebook in the smoke profile + site build"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -e ".[test]"
	@touch $(STAMP)

venv: $(STAMP)

book: venv
	$(PY) tools/bookrunner.py build --profile $(PROFILE)

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

clean-book:
	rm -rf book/_build

# Regenerate the committed student copies (notebooks/student/) after editing a chapter; the tests
# fail while they differ from the chapters.
student-copies: venv
	$(PY) tools/bookrunner.py student-copies
