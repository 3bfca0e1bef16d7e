# hashtool's two entry points: `make demo` (the main job on the bundled default) and `make test`.
# Both set up a virtual environment in .venv on first use; every install step lives here.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[train,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/hashtool --version
	$(VENV)/bin/hashtool --help

test: $(STAMP)
	$(PY) -m pytest -q
	NUMBA_DISABLE_JIT=1 HYPOTHESIS_PROFILE=nojit $(PY) -m pytest -q tests/test_hashindex_search.py tests/test_hashindex_api.py tests/test_hashindex_io.py
