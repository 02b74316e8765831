# The two commands of the README: `make demo` and `make test`. Each creates .venv first when
# it is missing (or when pyproject.toml or requirements.lock changed), with exactly the
# versions of requirements.lock: the set the whole suite last passed on.
#
# `make test-latest` runs the suite in a separate venv with the newest versions pyproject.toml
# allows (the guard against the next upstream release); `make lock` does the same and, when
# the suite passes, writes those versions to requirements.lock.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOCK := requirements.lock
LATEST := .venv-latest

.PHONY: demo test docs artifacts bench test-latest lock clean-venv

$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c $(LOCK) -e '.[dev]'
	$(PY) tools/lock.py check $(LOCK)
	touch $(STAMP)

demo: $(STAMP)
	$(PY) demo/app.py

test: $(STAMP)
	$(PY) -m pytest

# The documentation site (mkdocs.yml, docs/) into site/; --strict fails on any warning: a
# broken link or anchor, a missing reference, a docstring the API reference cannot render.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict -d site

# Rebuild the shipped bundles: synthetic cells (a few minutes), then real Herlev cells (about
# 10 minutes on 2 CPU cores; reads ../shared/data/herlev, or $$XCYTO_DATA/herlev).
artifacts: $(STAMP)
	$(PY) artifacts/build_demo_bundle.py
	$(PY) artifacts/build_herlev_bundle.py

bench: $(STAMP)
	for script in bench/*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

# A fresh venv with the newest allowed versions (torch and torchvision kept at the lock's,
# which come from the local wheel cache), then the whole suite.
test-latest:
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	grep -E '^(torch|torchvision)==' $(LOCK) > $(LATEST)/torch-pins.txt
	$(LATEST)/bin/python -m pip install -q -c $(LATEST)/torch-pins.txt -e '.[dev]'
	$(LATEST)/bin/python -m pytest -W default

lock: test-latest
	cp $(LOCK) $(LATEST)/previous.lock
	$(LATEST)/bin/python tools/lock.py write $(LOCK)
	$(LATEST)/bin/python tools/lock.py moved $(LATEST)/previous.lock $(LOCK)

clean-venv:
	rm -rf $(VENV) $(LATEST)
