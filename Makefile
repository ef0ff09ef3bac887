# The README's commands. `make run` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.setup-stamp
PYTEST_ARGS ?=

.PHONY: setup run test test-portable lint format bench reproduce clean docker docker-run docker-test

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
	$(VENV)/bin/ruff check cl strategies tests bench experiments docker
	$(VENV)/bin/ruff format --check cl strategies tests bench experiments docker

format: setup
	$(VENV)/bin/ruff format cl strategies tests bench experiments docker
	$(VENV)/bin/ruff check --fix cl strategies tests bench experiments docker

bench: setup
	$(PY) bench/continual_eval.py

# Every paper reproduction at full scale over its seeds, each ending with its claims table
# (experiments/targets.csv); `make reproduce NAME=stability_gap` runs one. The slow tests
# (`pytest -m slow`) rerun them and assert the claims marked reproduced.
NAME ?= all
reproduce: setup
	$(VENV)/bin/cl reproduce $(NAME)

# Docker (README, "Docker"): docker when its daemon answers, else podman.
ENGINE ?= $(shell if docker info >/dev/null 2>&1; then echo docker; \
	elif command -v podman >/dev/null; then echo podman; fi)
IMAGE ?= cl
REVISION = $(shell git rev-parse HEAD 2>/dev/null || echo unknown)$(shell \
	git status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo -dirty)
TAG = $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)$(findstring -dirty,$(REVISION))
# The local base image docker/podman-setup.sh builds where no registry is reachable.
LOCAL_BASE := localhost/cl-base:bookworm
BASE ?= $(shell $(ENGINE) image inspect $(LOCAL_BASE) >/dev/null 2>&1 && echo $(LOCAL_BASE))
# Local package indexes (the ones this host's pip uses) and the host's CA bundle, mounted into
# a podman build under /tmp/host (empty mount points stay there): the image gets the host
# .venv's wheels. docker build cannot mount them.
LOCAL_INDEXES ?= $(wildcard /opt/pypi /opt/pypi-more)
HOST_CA ?= $(wildcard /etc/ssl/certs/ca-certificates.crt)
PODMAN_BUILD = $(foreach d,$(LOCAL_INDEXES),-v $(d):/tmp/host$(d):ro) \
	$(if $(LOCAL_INDEXES),--build-arg PIP_EXTRA_INDEX_URL="$(LOCAL_INDEXES:%=file:///tmp/host%/simple)") \
	$(if $(HOST_CA),-v $(HOST_CA):/tmp/host/ca.crt:ro --build-arg PIP_CERT=/tmp/host/ca.crt)
# Containers run as you, so that ./runs stays yours (rootless podman needs keep-id for that).
AS_ME = --user $(shell id -u):$(shell id -g) \
	$(if $(filter podman,$(ENGINE)),$(if $(filter-out 0,$(shell id -u)),--userns=keep-id))

no-engine = echo "error: no container engine: docker info fails and there is no podman \
(as root, docker/podman-setup.sh installs podman)" >&2; exit 2

docker:
	@if [ -z "$(ENGINE)" ]; then $(no-engine); fi
	$(ENGINE) build -f docker/Dockerfile -t $(IMAGE):$(TAG) -t $(IMAGE):latest \
		$(if $(BASE),--build-arg BASE=$(BASE)) $(if $(filter podman,$(ENGINE)),$(PODMAN_BUILD)) \
		--build-arg IMAGE=$(IMAGE):$(TAG) --build-arg REVISION=$(REVISION) .

docker-run: docker
	@mkdir -p runs data
	$(ENGINE) run --rm $(AS_ME) -v $(CURDIR)/runs:/runs -v $(CURDIR)/data:/data \
		$(IMAGE):$(TAG) run $(ARGS)

# Builds the image (setting up podman first where no engine works), runs the default
# experiment in it and on the host, and checks that their summaries are identical.
docker-test: setup
	@if [ -z "$(ENGINE)" ]; then docker/podman-setup.sh; fi
	$(MAKE) docker
	CL_DOCKER_IMAGE=$(IMAGE):$(TAG) $(PY) -m pytest -q -s -m docker tests/test_docker.py

clean:
	rm -rf runs bench/out .pytest_cache
