# Two commands on a fresh clone: `make demo` and `make test` (`make install` installs only).
# Installs go through constraints.txt (the versions that install on our machines).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --disable-pip-version-check -q -c constraints.txt

.PHONY: install demo test lint bench readme-list

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PIP) -e .
	touch $@

# One pip call for the package and its dev extras (a second call would resolve everything and
# build the editable wheel again); it also stands for `make install`.
$(VENV)/.installed-dev: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PIP) -e ".[dev]"
	touch $(VENV)/.installed $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/flsec demo

# The in-process tests on two workers (pytest-xdist); the slow ones (Ray clusters, deployments,
# baseline smoke runs) one at a time, since they start their own processes and ports.
test: $(VENV)/.installed-dev
	HYPOTHESIS_PROFILE=ci $(PY) -m pytest -q -m "not slow" -n 2
	HYPOTHESIS_PROFILE=ci $(PY) -m pytest -q -m slow

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy --strict strategies clients

readme-list: $(VENV)/.installed  # regenerate README's `flsec list --markdown` table and catalogue
	$(PY) -m flsec_flower.app.catalog README.md

bench: $(VENV)/.installed
	$(PY) benchmarks/round_time.py
