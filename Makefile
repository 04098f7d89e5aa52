# gmm-svi: `make reproduce` re-runs every notebook and regenerates figures/;
# `make test` runs the test suite. Both create .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9]*.ipynb))
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONHASHSEED := 0

.DEFAULT_GOAL := help
.PHONY: help venv reproduce test test-unit test-notebooks lab workshop benchmark benchmark-scaling lint clean

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $@

venv: $(VENV)/.installed ## Create .venv with the package and its pinned dependencies

reproduce: venv ## Execute every notebook in place and regenerate figures/
	$(BIN)/python scripts/reproduce.py $(NOTEBOOKS)

test: venv ## Run the unit tests, then nbval over the notebooks
	$(BIN)/python -m pytest tests
	figures=$$(mktemp -d) && GMM_FIGURE_DIR=$$figures $(BIN)/python -m pytest --nbval-lax \
	  --nbval-current-env --nbval-sanitize-with notebooks/sanitize.cfg notebooks/; \
	  status=$$?; rm -rf $$figures; exit $$status

test-unit: venv ## Run only the unit tests (fast)
	$(BIN)/python -m pytest tests -m "not notebooks"

$(VENV)/.lab-installed: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[dev,lab]"
	@touch $@

lab: $(VENV)/.lab-installed ## Open the notebooks in JupyterLab with the project's environment
	$(BIN)/jupyter lab notebooks/

workshop: venv ## Write student copies of the notebooks, without solutions, to workshop/
	$(BIN)/python scripts/workshop.py --output-dir workshop

benchmark: venv ## Time the seed's algorithm, gmm.fit and scikit-learn on the seed's data
	$(BIN)/python benchmarks/seed_workload.py

benchmark-scaling: venv ## A million points: gmm (Adam, natural, streamed) vs scikit-learn (~2 min)
	$(BIN)/python benchmarks/scaling.py

lint: venv ## Check the code style with ruff
	$(BIN)/ruff check gmm tests benchmarks scripts

clean: ## Remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache gmm-svi.egg-info workshop
