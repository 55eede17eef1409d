# Every target runs the idempotent set-up first (virtual env, torch, project, kernel, git filter).
VENV ?= .venv
BIN := $(VENV)/bin
PROFILE ?= quick

.PHONY: setup report test test-fast lab bench clean-reports

setup:
	@bash scripts/setup.sh

report: setup  ## the main job: the full report on the embedded real data
	$(BIN)/workbench report --profile $(PROFILE)

test: setup  ## the whole test suite, as CI runs it
	$(BIN)/python -m pytest tests

test-fast: setup  ## skip the slow end-to-end tests
	$(BIN)/python -m pytest tests -m "not slow"

lab: setup  ## JupyterLab on the notebooks with the project kernel
	$(BIN)/jupyter lab notebooks/

clean-reports:
	rm -rf reports/
