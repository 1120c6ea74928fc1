# Research-reproduction workspace. `make` (or `make help`) lists the targets.
# Every target runs inside .venv, created by `make setup` on first use.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON_BOOT ?= python3.11
VENV        := .venv
PY          := $(abspath $(VENV))/bin/python
STAMP       := $(VENV)/.installed
REQS        := requirements.txt requirements-nodeps.txt $(wildcard */requirements.txt) pyproject.toml
# a project is a top-level folder with a paper.yaml (common/projects.py; no list to edit)
PRESENT     := $(patsubst %/paper.yaml,%,$(wildcard */paper.yaml))
# pytest workers for `make test` (2 cores here); `make test PYTEST_WORKERS=0` runs serially
PYTEST_WORKERS ?= 2

export CUBLAS_WORKSPACE_CONFIG ?= :4096:8
export PYTHONUNBUFFERED := 1

.PHONY: help setup test test-all lint faults compare clean

help: ## list the targets
	@echo "usage: make <target>   (projects: $(PRESENT))"
	@grep -hE '^[a-zA-Z0-9_%-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([^:]+):.*## (.*)/  \1\t\2/' | expand -t 22

setup: $(STAMP) ## create .venv (Python 3.11) and install the pinned requirements; reruns when they change

$(STAMP): $(REQS)
	@command -v $(PYTHON_BOOT) >/dev/null || { echo "need $(PYTHON_BOOT) on PATH (set PYTHON_BOOT=...)" >&2; exit 1; }
	@test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e . --config-settings editable_mode=compat
	@touch $@

test: $(STAMP) ## run every test except `slow` ones, CPU only, in parallel (the README's test command)
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) -m "not slow" $(PYTEST_ARGS)

test-all: $(STAMP) ## run every test including `slow` ones
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

lint: $(STAMP) ## ruff over the workspace
	$(PY) -m ruff check .

faults: $(STAMP) ## run the bad-input and fault cases as a user would and print the table (slow, ~15 CPU-min)
	$(PY) -m tests.faults --markdown results/faults.md

compare: $(STAMP) ## print every project's measured-vs-paper table and write results/summary.md
	$(PY) -m common.compare --all

clean: ## remove caches (keeps .venv, data/ and runs/)
	find . -name __pycache__ -prune -exec rm -rf {} + ; rm -rf .pytest_cache .ruff_cache *.egg-info

# ---- the shared temporal-sentence-grounding layer (common/tsg), used by five projects ----------
TSG_SYNTH ?= data/tsg_synthetic
data-tsg: $(STAMP) ## generate the default embedded grounding benchmark under data/tsg_synthetic
	$(PY) -m common.tsg.synthetic --out $(TSG_SYNTH) --seed 0

bench-tsg: $(STAMP) ## evaluator speed on 17,505 queries and HDF5 loader throughput
	$(PY) -m common.tsg.bench

# ---- per-project targets: `make <target>-<project>` runs `make <target>` in <project>/ -------
# Project Makefiles receive PY (the venv's python); DATASET / DATA_ROOT / SEEDS pass through.
define dispatch
	@if [ ! -d "$(2)" ]; then \
	  echo "no project folder '$(2)/'. projects (folders with a paper.yaml): $(PRESENT)" >&2; exit 2; \
	elif ! grep -qE '^$(1):' "$(2)/Makefile" 2>/dev/null; then \
	  echo "project '$(2)' has no '$(1)' target (see $(2)/Makefile)" >&2; exit 2; \
	else $(MAKE) --no-print-directory -C "$(2)" $(1) PY=$(PY); fi
endef

reproduce-%: $(STAMP) ## set-up -> embedded data -> train -> eval -> comparison table (e.g. reproduce-ecrl)
	$(call dispatch,reproduce,$*)
train-%: $(STAMP) ## train a project with its default config (e.g. train-ecrl)
	$(call dispatch,train,$*)
eval-%: $(STAMP) ## evaluate a project's latest run (e.g. eval-ecrl)
	$(call dispatch,eval,$*)
bench-%: $(STAMP) ## a project's speed/memory benchmark (e.g. bench-ecrl)
	$(call dispatch,bench,$*)
data-%: $(STAMP) ## prepare a project's embedded dataset under data/ (e.g. data-dmba)
	$(call dispatch,data,$*)
