# The two commands a newcomer needs:  make demo   and   make test
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= 2

.PHONY: setup demo test clean-demo help

help:
	@echo "make demo   - set up .venv and run the whole pipeline on the embedded demo data"
	@echo "make test   - set up .venv (if needed) and run the test suite"
	@echo "make setup  - only create .venv with the pinned packages (requirements.lock)"

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -c "import torch, torchvision, open_clip, peft, medspacy, great_expectations, mlflow, polars; print('environment ok: torch', torch.__version__, 'torchvision', torchvision.__version__)"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --cores $(CORES) --profile workflow/profiles/local
	@echo
	@echo "Results:"
	@echo "  tables      reports/tables/summary.csv (+ .md)"
	@echo "  plots       reports/plots/"
	@echo "  CTE         reports/cte/ (heatmap.png, layer_weights.csv)"
	@echo "  validation  reports/validation/"
	@echo "  MLflow      make mlflow-ui  (store: mlruns.db)"

test: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -q
