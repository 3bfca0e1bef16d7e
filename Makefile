# hashtool's two entry points: `make demo` (the main job, on real photos with the bundled photo encoder) and
# `make test`.
# Both set up a virtual environment in .venv on first use; every install step lives here.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
HASHTOOL := $(VENV)/bin/hashtool
STAMP := $(VENV)/.installed-stamp
FASHION := /usr/share/datasets/fashion-mnist
DEMO ?= demo

.PHONY: demo test setup data photos browser bench-data clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[train,dev]'
	touch $(STAMP)

# $(call apt_ensure,TEST,PACKAGES,NOTE): unless the shell test TEST holds, install Debian's PACKAGES (apt-get,
# as root; an `apt-get update` first if the lists are stale), or print NOTE where apt is not usable.
apt_ensure = if $(1); then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  (apt-get install -y -q $(2) || (apt-get update -q && apt-get install -y -q $(2))) >/dev/null; \
	else echo "note: $(3)" >&2; fi

# Fashion-MNIST from Debian's package (no download at run time); skipped with a note where apt is not usable.
FASHION_NOTE := Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist, as root); its tests are skipped
data:
	@$(call apt_ensure,[ -d $(FASHION) ],dataset-fashion-mnist,$(FASHION_NOTE))

# Headless Chromium for the HTML page tests (tests/test_html_browser.py skips, saying why, without it).
BROWSER_NOTE := Chromium is not installed (apt-get install chromium, as root); the browser tests will be skipped
browser:
	@$(call apt_ensure,command -v chromium >/dev/null || command -v chromium-browser >/dev/null,chromium,$(BROWSER_NOTE))

# Natural photos for the demo, from Debian's packages (no download at run time): GCompris' photos and the
# Lomiri wallpapers; skipped with a note where apt is not usable (the demo then needs them installed by hand).
PHOTO_PKGS := gcompris-qt-data lomiri-wallpapers-16.04 lomiri-wallpapers-20.04
photos:
	@$(call apt_ensure,[ -d /usr/share/gcompris-qt/rcc ] && [ -d /usr/share/backgrounds ],$(PHOTO_PKGS),install $(PHOTO_PKGS) (apt-get as root) for the photo demo)

# 12-megapixel sources for the decode and photo-speed benchmarks (benchmarks/bench_decode.py makes its JPEGs
# from the largest Plasma wallpapers); skipped with a note where apt is not usable.
bench-data:
	@$(call apt_ensure,[ -d /usr/share/wallpapers ],plasma-workspace-wallpapers,install plasma-workspace-wallpapers (apt-get as root) for the decode benchmarks)

# The main job on real photos: held-out photos of those packages plus edited copies of some of them, indexed
# with the bundled photo encoder; then a duplicate radius calibrated on this folder, the near-duplicate groups,
# one query by an edited copy, and an HTML page of its results. Re-running is incremental.
demo: $(STAMP) photos
	@set -e; q=$$($(HASHTOOL) data demo $(DEMO)/photos); \
	$(HASHTOOL) index build $(DEMO)/photos --index $(DEMO)/index; \
	$(HASHTOOL) index info --index $(DEMO)/index; \
	$(HASHTOOL) calibrate --index $(DEMO)/index --recall 0.9 --sample 60; \
	$(HASHTOOL) dups $(DEMO)/photos --index $(DEMO)/index | head -n 40; \
	$(HASHTOOL) query "$$q" -k 10 --index $(DEMO)/index --html $(DEMO)/results.html; \
	echo "open $(DEMO)/results.html to see the query and its neighbours"

test: $(STAMP) data browser
	$(PY) -m pytest -q
	NUMBA_DISABLE_JIT=1 HYPOTHESIS_PROFILE=nojit $(PY) -m pytest -q tests/test_hashindex_search.py tests/test_hashindex_api.py tests/test_hashindex_io.py tests/test_hashindex_flat.py
