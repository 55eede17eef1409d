# Every target runs the idempotent set-up first (virtual env, torch, project, kernel, git filter).
VENV ?= .venv
BIN := $(VENV)/bin
PROFILE ?= quick

.PHONY: setup report lint test test-fast lab clean-reports

setup:
	@bash scripts/setup.sh

report: setup  ## the main job: the full report on the embedded real data
	$(BIN)/workbench report --profile $(PROFILE)

lint: setup  ## ruff (lint and format) and the import-linter layer contracts
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

test: setup lint  ## the lint, then the whole test suite (what CI runs)
	$(BIN)/python -m pytest tests

test-fast: setup  ## skip the slow end-to-end tests
	$(BIN)/python -m pytest tests -m "not slow"

lab: setup  ## JupyterLab on the notebooks with the project kernel
	$(BIN)/jupyter lab notebooks/

clean-reports:
	rm -rf reports/
