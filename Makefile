# The two commands of the README: `make demo` and `make test`. Each creates .venv first
# when it is missing (or when pyproject.toml changed).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test artifacts bench clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) demo/app.py

test: $(STAMP)
	$(PY) -m pytest

# Rebuild the shipped demo bundle (trained on synthetic cells, reproducibly).
artifacts: $(STAMP)
	$(PY) artifacts/build_demo_bundle.py

bench: $(STAMP)
	for script in bench/*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

clean-venv:
	rm -rf $(VENV)
