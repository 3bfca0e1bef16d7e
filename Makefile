# hashtool's two entry points: `make demo` (the main job on the bundled default) and `make test`.
# Both set up a virtual environment in .venv on first use; every install step lives here.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
HASHTOOL := $(VENV)/bin/hashtool
STAMP := $(VENV)/.installed-stamp
FASHION := /usr/share/datasets/fashion-mnist
DEMO ?= demo

.PHONY: demo test setup data browser clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[train,dev]'
	touch $(STAMP)

# Fashion-MNIST from Debian's package (no download at run time); skipped with a note where apt is not usable.
data:
	@if [ -d $(FASHION) ]; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  (apt-get install -y -q dataset-fashion-mnist || (apt-get update -q && apt-get install -y -q dataset-fashion-mnist)) >/dev/null; \
	else echo "note: Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist, as root); the demo falls back to mnist-5k" >&2; fi

# Headless Chromium for the HTML page tests (tests/test_html_browser.py skips, saying why, without it).
browser:
	@if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  (apt-get install -y -q chromium || (apt-get update -q && apt-get install -y -q chromium)) >/dev/null; \
	else echo "note: Chromium is not installed (apt-get install chromium, as root); the browser tests will be skipped" >&2; fi

# The main job: index 2,000 real images (Fashion-MNIST test set, written as PNG files) with the bundled
# encoder, query one of them, and write an HTML page of the results. Re-running is incremental.
demo: $(STAMP) data
	@set -e; if [ -d $(FASHION) ]; then ds=fashion-mnist; else ds=mnist-5k; fi; \
	$(HASHTOOL) data export $$ds $(DEMO)/images --limit 2000 --seed 0 >/dev/null; \
	$(HASHTOOL) index build $(DEMO)/images --index $(DEMO)/index; \
	$(HASHTOOL) index info --index $(DEMO)/index; \
	q=$$(find $(DEMO)/images -name '*.png' | sort | head -n 1); \
	$(HASHTOOL) query "$$q" -k 10 --index $(DEMO)/index --html $(DEMO)/results.html; \
	echo "open $(DEMO)/results.html to see the query and its neighbours"

test: $(STAMP) data browser
	$(PY) -m pytest -q
	NUMBA_DISABLE_JIT=1 HYPOTHESIS_PROFILE=nojit $(PY) -m pytest -q tests/test_hashindex_search.py tests/test_hashindex_api.py tests/test_hashindex_io.py
