# Two commands for a fresh machine:
#   make book   set up, execute every notebook with its default parameters, render _build/html
#               (a notebook runs again only when what it depends on changed; make book FORCE=1 runs all)
#   make test   set up, lint, unit tests, every notebook on its CI profile with papermill, then nbval
# and one for the dependency ranges:
#   make test-lowest   the unit tests of the case studies in a fresh venv holding the lowest versions
#                      pyproject.toml declares for transformers, accelerate, peft and gguf
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

# Use the active virtual environment if there is one, else create .venv here.
ifdef VIRTUAL_ENV
VENV := $(VIRTUAL_ENV)
else
VENV := $(CURDIR)/.venv
endif
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tvutils-installed
JOBS ?= 2
# This machine's exact pins (torch's CPU wheel); every pip install below passes them with -c.
CONSTRAINTS := $(CURDIR)/constraints.txt
LOWEST_VENV ?= /tmp/tvutils-lowest-$(USER)
LOWEST_PACKAGES := transformers accelerate peft gguf
# make book FORCE=1: execute every notebook again, whatever the execution cache (_build/exec-cache) holds.
FORCE ?=
ACTIONLINT ?= $(VENV)/bin/actionlint

# Quiet progress bars in executed notebooks (their text outputs are compared by nbval), and no busy-waiting
# OpenMP threads when two notebooks share the two cores.
export TVUTILS_PROGRESS := 0
export OMP_WAIT_POLICY := PASSIVE
export PYDEVD_DISABLE_FILE_VALIDATION := 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup data lint unit notebooks-ci nbval test test-lowest book clean

$(PY):
	python3 -m venv $(VENV)

# torch's wheel. On a machine without a CUDA GPU (no nvidia-smi) pip also looks in TORCH_INDEX, PyTorch's index of
# CPU wheels: PyPI's torch is the CUDA build, with several GB of CUDA libraries. Override it with
# `make TORCH_INDEX=<index URL>` (e.g. https://download.pytorch.org/whl/cu126), or `make TORCH_INDEX=` for pip's
# own choice. No index is added where pip finds the pinned torch without one: installed already, or in a local
# wheel folder pip is configured with (find-links), as on the book's own machines, which work offline.
TORCH_INDEX ?= $(if $(shell command -v nvidia-smi 2>/dev/null),,https://download.pytorch.org/whl/cpu)
define install_torch
	if [ -n "$(TORCH_INDEX)" ] && ! $(1) -m pip install --quiet --dry-run --no-index --no-deps -c $(CONSTRAINTS) torch >/dev/null 2>&1; then \
		echo "torch: no pinned torch wheel here; pip also looks in $(TORCH_INDEX) (make TORCH_INDEX=<url> to change)"; \
		$(1) -m pip install --quiet -c $(CONSTRAINTS) --extra-index-url $(TORCH_INDEX) torch; \
	else \
		$(1) -m pip install --quiet -c $(CONSTRAINTS) torch; \
	fi
endef

$(STAMP): $(PY) pyproject.toml constraints.txt
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) --upgrade pip
	$(call install_torch,$(PY))
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e '.[case-studies,book,test]'
	touch $(STAMP)

setup: $(STAMP) data

# Offline data and models for the case studies, idempotently: every entry of the registry tvutils/chapter/data_registry.yaml
# but the optional ones (python -m tvutils data list), each download and what it unpacks to checked by SHA-256.
data: $(STAMP)
	$(PY) -m tvutils data fetch all

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(ACTIONLINT) .github/workflows/*.yml

unit: $(STAMP)
	$(PY) -m pytest tests -q -n $(JOBS) --dist loadgroup

notebooks-ci: setup
	$(PY) tools/run_notebooks.py --profile ci --out _build/executed/ci --jobs $(JOBS)

nbval: notebooks-ci
	$(PY) -m pytest -q -n $(JOBS) --dist loadfile -p no:cacheprovider --nbval --nbval-sanitize-with tools/nbval_sanitize.cfg \
		-o testpaths= _build/executed/ci/notebooks

test: setup lint unit notebooks-ci nbval

# The lower bounds are tested, not guessed: a throwaway venv with torch from constraints.txt and, for each of
# LOWEST_PACKAGES, exactly the lower bound pyproject.toml declares (tools/lowest_constraints.py), then the unit
# tests that use them. Needs the package index; the data is not needed.
test-lowest:
	rm -rf $(LOWEST_VENV)
	python3 -m venv $(LOWEST_VENV)
	python3 tools/lowest_constraints.py $(LOWEST_PACKAGES) > $(LOWEST_VENV)/lowest.txt
	cat $(LOWEST_VENV)/lowest.txt
	$(call install_torch,$(LOWEST_VENV)/bin/python)
	$(LOWEST_VENV)/bin/python -m pip install --quiet -c $(CONSTRAINTS) -c $(LOWEST_VENV)/lowest.txt -e '.[case-studies,test]'
	$(LOWEST_VENV)/bin/python -c 'import importlib.metadata as m; print(*(f"{p} {m.version(p)}" for p in "torch $(LOWEST_PACKAGES)".split()), sep=", ")'
	$(LOWEST_VENV)/bin/python -m pytest tests/language tests/vision -q

book: setup
	$(PY) tools/run_notebooks.py --profile default --out _build/source --jobs $(JOBS) --copy-book \
		--cache _build/exec-cache $(if $(FORCE),--force)
	$(VENV)/bin/jupyter-book build _build/source --path-output $(CURDIR) --warningiserror --keep-going
	$(PY) tools/check_offline_html.py _build/html
	$(PY) tools/check_pages.py _build/html _build/source/notebooks

clean:
	rm -rf _build
