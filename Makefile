# The README's commands. `make run` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.setup-stamp
PYTEST_ARGS ?=

.PHONY: setup run test test-portable lint format bench reproduce clean

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

# The outcome tests (pytest -m outcome: accuracy, forgetting, ... after training) with the
# numerics of other machines, emulated on this one: x86 without AVX2 (SSE kernels), AVX2 only,
# MKL's compatible GEMM path, one thread. SEEDS="0 1 2 3 4" also shifts every seed of these
# tests by each offset. Prints min, max and margin of every check (tests/outcome_report.py).
SEEDS ?= 0
PORTABLE_SETTINGS := \
	"ATEN_CPU_CAPABILITY=default MKL_ENABLE_INSTRUCTIONS=SSE4_2 ONEDNN_MAX_CPU_ISA=SSE41" \
	"ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2" \
	"MKL_CBWR=COMPATIBLE" \
	"OMP_NUM_THREADS=1"
OUTCOMES := runs/test-portable/outcomes.jsonl

# pytest's exit code 5 (nothing collected) counts as success, as in `make test`.
test-portable: setup
	@mkdir -p $(dir $(OUTCOMES)); rm -f $(OUTCOMES); fail=0; \
	for setting in $(PORTABLE_SETTINGS); do for offset in $(SEEDS); do \
		echo "== $$setting, seed offset $$offset"; \
		env $$setting $(PY) -m pytest -q -m 'outcome and not slow' --seed-offset $$offset \
			--record-outcomes=$(OUTCOMES) $(PYTEST_ARGS); \
		rc=$$?; if [ $$rc -ne 0 ] && [ $$rc -ne 5 ]; then fail=1; fi; \
	done; done; \
	if [ -s $(OUTCOMES) ]; then $(PY) tests/outcome_report.py $(OUTCOMES); fi; exit $$fail

lint: setup
	$(VENV)/bin/ruff check cl strategies tests bench experiments
	$(VENV)/bin/ruff format --check cl strategies tests bench experiments

format: setup
	$(VENV)/bin/ruff format cl strategies tests bench experiments
	$(VENV)/bin/ruff check --fix cl strategies tests bench experiments

bench: setup
	$(PY) bench/continual_eval.py

# Every paper reproduction at full scale over its seeds, each ending with its claims table
# (experiments/targets.csv); `make reproduce NAME=stability_gap` runs one. The slow tests
# (`pytest -m slow`) rerun them and assert the claims marked reproduced.
NAME ?= all
reproduce: setup
	$(VENV)/bin/cl reproduce $(NAME)

clean:
	rm -rf runs bench/out .pytest_cache
