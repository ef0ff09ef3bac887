# The README's commands. `make run` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.setup-stamp
PYTEST_ARGS ?=

.PHONY: setup run test lint format bench reproduce clean

setup: $(STAMP)

# Re-installs only when pyproject.toml or the pinned constraints change.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

run: setup
	$(VENV)/bin/cl run $(ARGS)

# pytest exits 5 when no test was collected; that is not a failure of the suite.
test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then exit 0; fi; exit $$rc

lint: setup
	$(VENV)/bin/ruff check cl strategies tests bench experiments
	$(VENV)/bin/ruff format --check cl strategies tests bench experiments

format: setup
	$(VENV)/bin/ruff format cl strategies tests bench experiments
	$(VENV)/bin/ruff check --fix cl strategies tests bench experiments

bench: setup
	$(PY) bench/continual_eval.py

reproduce: setup
	$(PY) -m pytest -q -m slow

clean:
	rm -rf runs bench/out .pytest_cache
