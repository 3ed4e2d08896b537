# The two commands of the README: `make run` and `make test`. Everything else is a step of those.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_PY := $(VENV)/.installed
STAMP_NPM := node_modules/.installed
# The suite runs on one pytest-xdist worker per core, at most four (each starts its own anvil): 18 min on one
# process on 2 cores, 9 min on two; four workers were no faster there.
TEST_WORKERS ?= -n auto --maxprocesses=4

.PHONY: setup run test test-fast lint bench bench-quick contracts postgres clean

setup: $(STAMP_PY) $(STAMP_NPM)

$(STAMP_PY): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

# Not `npm ci`: it insists on every platform's optional anvil binary being in the lock, and only the
# linux-amd64 one is published to the registry this project uses. `npm install --no-save` installs the
# locked versions and never rewrites the lock.
$(STAMP_NPM): package.json package-lock.json
	npm install --no-save --no-audit --no-fund --loglevel=error
	touch $@

## Set up, then run the node on the dev chain with SQLite and a demo consortium of three banks.
run: setup
	$(BIN)/alliance node start --demo

## Set up, start PostgreSQL if this machine has it, then run the whole test suite.
test: setup
	bash scripts/ensure-postgres.sh
	source scripts/test-env.sh && $(BIN)/pytest -q $(TEST_WORKERS)

test-fast: setup
	$(BIN)/pytest -q $(TEST_WORKERS) -m "not slow and not postgres"

lint: setup
	$(BIN)/ruff check node alliance_cli tests bench
	$(BIN)/mypy node alliance_cli

contracts: setup
	$(BIN)/alliance contracts build

bench-quick: setup
	for b in bench/*.py; do case $$b in */_*) continue;; esac; echo "== $$b"; $(BIN)/python $$b --quick || exit 1; done

bench: setup
	for b in bench/*.py; do case $$b in */_*) continue;; esac; echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache
