# gmm-svi: `make reproduce` re-runs every notebook and regenerates figures/;
# `make test` runs the test suite. Both create .venv on first use.
SHELL := /bin/bash
# The Python versions TensorFlow 2.21 ships wheels for, newest first.
SUPPORTED_PYTHONS := 3.13 3.12 3.11 3.10
# The first of python3.13 ... python3.10 that runs (a pyenv shim for a version
# that is not active exists but fails, so each is tried), else python3 when it
# is a supported version. Override with `make PYTHON=/path/to/python3.12 ...`.
PYTHON ?= $(shell for v in $(SUPPORTED_PYTHONS); do \
  python$$v -c '' >/dev/null 2>&1 && { echo python$$v; exit; }; done; \
  python3 -c 'import sys; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 13))' \
  >/dev/null 2>&1 && echo python3)
VENV ?= .venv
LATEST_VENV ?= .venv-latest
LOCK_VENV ?= .venv-lock
UV_VERSION ?= 0.13.8
BOOK_DIR ?= _build/book
MULTIWORKER_DIR ?= _build/multiworker
BIN := $(VENV)/bin
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9]*.ipynb))
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONHASHSEED := 0
# oneDNN's CPU kernels reorder floating-point sums, so results differ in the last
# bits from one CPU to the next; without them a seed gives the same numbers everywhere.
export TF_ENABLE_ONEDNN_OPTS ?= 0
# pytest-xdist: one worker per core, at most four (each holds its own TensorFlow,
# about 1 GB); the tests' TensorFlow work is small ops, so two processes on two
# cores nearly halve the wall time. `make test PYTEST_WORKERS=0` runs in one process.
PYTEST_WORKERS ?= auto
PYTEST_PARALLEL := -n $(PYTEST_WORKERS) $(if $(filter auto,$(PYTEST_WORKERS)),--maxprocesses 4)

# Stops with one line when no supported interpreter was found.
define check-python
@"$(PYTHON)" -c 'import sys; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 13))' \
  >/dev/null 2>&1 || { echo "gmm-svi needs Python 3.10, 3.11, 3.12 or 3.13 (TensorFlow 2.21 has no wheels for others)$(if $(PYTHON),; '$(PYTHON)' is not one of them,; none was found): install one, e.g. 'pyenv install 3.12' or your system's python3.12 package, then run make again (or make PYTHON=/path/to/python3.12 ...)." >&2; exit 1; }
endef

.DEFAULT_GOAL := help
.PHONY: help venv lock reproduce book test test-unit test-latest test-properties lab workshop benchmark benchmark-scaling multiworker lint clean

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

# requirements.lock pins every package `make venv` installs (pyproject.toml's dependencies
# and its dev and docs extras, with what they need) to one version and its sha256 hashes,
# for Python 3.10-3.13 on every platform (environment markers); `make lock` writes it.
# The package itself is then installed without dependencies and without build
# isolation (setuptools comes from the lock), so nothing unhashed is downloaded.
$(VENV)/.installed: pyproject.toml requirements.lock
	$(check-python)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $@

venv: $(VENV)/.installed ## Create .venv with the package and the locked versions of its dependencies

# uv resolves for every supported Python and platform at once (--universal), which
# pip-tools cannot; it runs from its own small venv so that .venv holds only the lock.
lock: ## Regenerate requirements.lock from pyproject.toml's pins (uv, every Python 3.10-3.13)
	$(check-python)
	@test -x $(LOCK_VENV)/bin/uv || { $(PYTHON) -m venv $(LOCK_VENV) && \
	  $(LOCK_VENV)/bin/python -m pip install --quiet uv==$(UV_VERSION); }
	$(LOCK_VENV)/bin/uv pip compile pyproject.toml --extra dev --extra docs --universal \
	  --python-version 3.10 --generate-hashes --custom-compile-command "make lock" \
	  --quiet -o requirements.lock

reproduce: venv ## Execute every notebook in place and regenerate figures/
	$(BIN)/python scripts/reproduce.py $(NOTEBOOKS)

book: venv ## Build the site of the executed notebooks (no re-execution) into _build/book
	$(BIN)/python -m sphinx -W --keep-going -q -c docs . $(BOOK_DIR)
	@echo "The book: $(BOOK_DIR)/index.html"

# nbval with --dist loadfile: a notebook's cells run in order in one kernel, on one worker.
test: venv ## Run the unit tests and the book check, then nbval over the notebooks
	$(BIN)/python -m pytest $(PYTEST_PARALLEL) tests
	figures=$$(mktemp -d) && GMM_FIGURE_DIR=$$figures $(BIN)/python -m pytest \
	  $(PYTEST_PARALLEL) --dist loadfile --nbval-lax \
	  --nbval-current-env --nbval-sanitize-with notebooks/sanitize.cfg notebooks/; \
	  status=$$?; rm -rf $$figures; exit $$status

test-unit: venv ## Run only the unit tests (fast)
	$(BIN)/python -m pytest $(PYTEST_PARALLEL) tests -m "not notebooks and not book"

# The subset: `make test` has already run everything with the locked versions, and
# the slow tests (long fits to convergence) exercise the same library calls as the
# quick ones; notebooks, book and slow tests are left out here.
LATEST_TESTS ?= not notebooks and not book and not slow
test-latest: ## Unit tests but the slow ones (-m "not slow") against the newest release of every dependency, in .venv-latest
	$(check-python)
	@test -x $(LATEST_VENV)/bin/python || $(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LATEST_VENV)/bin/python scripts/unpinned_requirements.py > $(LATEST_VENV)/requirements.txt
	$(LATEST_VENV)/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager \
	  -r $(LATEST_VENV)/requirements.txt -c constraints-latest.txt
	$(LATEST_VENV)/bin/python -m pip install --quiet --no-deps -e .
	@$(LATEST_VENV)/bin/python -m pip list --format=freeze | grep -iE \
	  '^(tensorflow|tensorflow-probability|tf[-_]keras|numpy|scipy|scikit-learn|pandas|matplotlib|arviz|arviz[-_]stats)==' \
	  | tr '\n' ' '; echo
	$(LATEST_VENV)/bin/python -m pytest $(PYTEST_PARALLEL) tests -m "$(LATEST_TESTS)" \
	  -p no:cacheprovider

test-properties: venv ## Property-based tests with a large example budget (a few minutes)
	GMM_HYPOTHESIS_PROFILE=thorough $(BIN)/python -m pytest tests/test_properties.py

$(VENV)/.lab-installed: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[dev,lab]"
	@touch $@

lab: $(VENV)/.lab-installed ## Open the notebooks in JupyterLab with the project's environment
	$(BIN)/jupyter lab notebooks/

workshop: venv ## Write student copies of the notebooks, without solutions, to workshop/
	$(BIN)/python scripts/workshop.py --output-dir workshop

benchmark: venv ## Time the seed's algorithm, gmm.fit and scikit-learn on the seed's data
	$(BIN)/python benchmarks/seed_workload.py

benchmark-scaling: venv ## A million points: gmm vs scikit-learn; writes benchmarks/results/scaling.txt (~6 min)
	$(BIN)/python benchmarks/scaling.py

multiworker: venv ## One fit on 2 local worker processes (TF_CONFIG, loopback), then in one process; writes benchmarks/results/multiworker.txt
	rm -rf $(MULTIWORKER_DIR)
	$(BIN)/python scripts/multiworker.py --workers 2 --output $(MULTIWORKER_DIR) --compare \
	  | tee benchmarks/results/multiworker.txt

lint: venv ## Check the code style with ruff
	$(BIN)/ruff check gmm tests benchmarks scripts docs

clean: ## Remove the virtual environment and caches
	rm -rf $(VENV) $(LATEST_VENV) $(LOCK_VENV) _build .pytest_cache .hypothesis .ruff_cache gmm-svi.egg-info workshop
