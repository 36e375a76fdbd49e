# Every target installs what it needs from nothing: a fresh clone runs `make test` or `make demo`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench clean system-deps

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/lrsweep run sweeps/specs/digits.yaml

# Debian's headless Chromium for the MLflow UI browser test (tests/sweeps/test_ui_browser.py).
system-deps:
	test -x /usr/bin/chromium || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver)

# Two pytest workers (pytest-xdist): the tests of the one shared Ray session run on one of them,
# the other tests module by module on whichever is free (tests/conftest.py groups them).
test: system-deps $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadgroup

lint: $(STAMP)
	$(VENV)/bin/ruff format --check trainers sweeps tests scripts
	$(VENV)/bin/ruff check trainers sweeps tests scripts
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) scripts/bench/run_all.py --out BENCHMARKS.md

clean:
	rm -rf .lrsweep .pytest_cache .mypy_cache .ruff_cache
