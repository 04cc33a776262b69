# The two commands a newcomer needs:  make demo   and   make test
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= 2

.PHONY: setup demo demo-full test lint test-mutants clean-demo help

help:
	@echo "make demo   - set up .venv and run the pipeline on the embedded demo data (quick: 3 methods, ~10 min)"
	@echo "make demo-full - the full comparison on the demo (every method, the beta sweep; ~60 min)"
	@echo "make test   - set up .venv (if needed) and run the test suite"
	@echo "make lint   - ruff check of src, tests, benchmarks and scripts (config in pyproject.toml)"
	@echo "make setup  - only create .venv with the pinned packages (requirements.lock)"
	@echo "make test-slurm - run the demo DAG through a real one-node SLURM cluster (root, apt-get)"
	@echo "make dvc.yaml   - regenerate dvc.yaml from the Snakemake DAG (= nast dvc-yaml; after changing data.source, methods, nast.betas, grounding.boxes or a rule)"
	@echo "make dvc-remote - configure a local DVC remote (DVC_REMOTE=DIR, default .dvc-remote/)"
	@echo "make mlflow-ui  - MLflow UI on http://127.0.0.1:5000 over mlruns.db"
	@echo "make test-mutants - plant named one-line bugs in the result-producing code, one at a time, and report survivors (slow; not CI)"

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -c "import torch, torchvision, open_clip, peft, medspacy, great_expectations, mlflow, polars, captum, skimage; print('environment ok: torch', torch.__version__, 'torchvision', torchvision.__version__)"
	touch $(STAMP)

setup: $(STAMP)

DEMO_CONFIG ?=
demo: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --cores $(CORES) --profile workflow/profiles/local $(DEMO_CONFIG)
	@echo
	@echo "Results:"
	@echo "  tables      reports/tables/summary.csv (+ .md)"
	@echo "  plots       reports/plots/"
	@echo "  CTE         reports/cte/ (heatmap.png, layer_weights.csv)"
	@echo "  validation  reports/validation/"
	@echo "  MLflow      make mlflow-ui  (store: mlruns.db)"

demo-full: $(STAMP)
	$(MAKE) demo DEMO_CONFIG="--configfile workflow/presets/demo-full.yaml"

test: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts

# mutation run (scripts/mutants.py): one-line bugs in scoring, controls, losses, NAST scaling, tracking
# and report tables, each applied alone to a temporary copy; the tests named for it must fail.
# MUTANTS_ARGS="--only NAME" / "--full" / "--list". Not part of CI (about 15 minutes on 2 cores).
MUTANTS_ARGS ?=
test-mutants: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python scripts/mutants.py $(MUTANTS_ARGS)

# --- orchestration: SLURM end-to-end, DVC remote, MLflow UI ------------------------------------
.PHONY: test-slurm dvc-remote mlflow-ui dvc.yaml
DVC_REMOTE ?=
MLFLOW_PORT ?= 5000

test-slurm: $(STAMP)  ## run the demo DAG on a real one-node SLURM test cluster and compare to a local run
	PATH=$(CURDIR)/$(BIN):$$PATH scripts/test_slurm.sh

dvc.yaml: $(STAMP)  ## dvc.yaml = the Snakemake DAG of params.yaml (nast dvc-yaml; a test checks it is up to date)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/nast dvc-yaml --params params.yaml --out dvc.yaml

dvc-remote: $(STAMP)  ## configure the default DVC remote (a local directory; DVC_REMOTE=DIR to choose)
	PATH=$(CURDIR)/$(BIN):$$PATH scripts/dvc_remote.sh $(DVC_REMOTE)

mlflow-ui: $(STAMP)  ## the MLflow UI over the local tracking store (mlruns.db)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlruns.db --host 127.0.0.1 --port $(MLFLOW_PORT)
