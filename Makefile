# The two commands a newcomer runs: `make demo` and `make test`. Each creates .venv if missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev

.PHONY: demo test lint typecheck unit bench clean soak

AZURITE_VERSION := 3.37.0
AZURITE_DIR := tests/.azurite

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# uv resolves and installs the same versions as pip in seconds (pip took over 3 minutes
	@# here); pip alone where uv cannot be installed or fails. Bytecode is compiled at install,
	@# as pip does: without it the Ray tests ran 2-3x slower in CI (cause not pinned down).
	if $(PY) -m pip install --quiet uv && \
	    $(VENV)/bin/uv pip install --quiet --compile-bytecode --python $(PY) -e '.[dev]'; \
	then :; else \
	  $(PY) -m pip install --quiet --upgrade pip && $(PY) -m pip install --quiet -e '.[dev]'; \
	fi
	@# Azurite (Azure Blob Storage emulator) for the Azure tests; without npm they skip.
	if command -v npm >/dev/null; then \
	  npm install --silent --no-audit --no-fund --no-save --no-package-lock \
	    --prefix $(AZURITE_DIR) azurite@$(AZURITE_VERSION); \
	else echo "npm not found: the Azure (Azurite) tests will be skipped"; fi
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/quickstart.py

lint: $(STAMP)
	$(VENV)/bin/ruff check lsm3 catalog compactor tests examples bench
	$(VENV)/bin/ruff format --check lsm3 catalog compactor tests examples

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# The suite runs in one process per core, at most 4; each process starts its own servers
# (moto, SeaweedFS, Azurite, Ray). On 2 cores it gains little (the tests are mostly CPU-bound).
# TEST_JOBS=0: one process.
TEST_JOBS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); [ $$n -gt 4 ] && n=4; echo $$n)

unit: $(STAMP)
	$(PY) -m pytest -n $(TEST_JOBS) --dist loadgroup

test: lint typecheck unit

clean:
	rm -rf $(VENV) $(AZURITE_DIR) .pytest_cache .mypy_cache .ruff_cache

# Benchmarks against the pyarrow floor and peer formats (slow; not part of `make test`).
# Extra options: make bench ARGS="--repeat 1 --skip slow"; workloads cdc-1m (default),
# cdc-10m, stream (ARGS="--workload stream --scale 0.1" for a quick run), storage
# ARGS="--storage s3" (SeaweedFS + counting proxy); see bench/README.md.
bench: $(STAMP)
	$(PY) -m bench $(ARGS)

# Reliability soak (slow; not part of `make test`, whose fast versions of the same harnesses run
# in `unit`): random faults, hundreds of SIGKILLs of writers, compactors and maintenance, races
# on SeaweedFS, fuzzed metadata/Parquet/CDC, sustained load. About 12 minutes; writes the
# figures into docs/RELIABILITY.md. Extra options: make soak ARGS="--minutes 30 --no-write".
soak: $(STAMP)
	$(PY) tests/soak.py run $(ARGS)
