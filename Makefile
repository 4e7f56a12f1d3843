# Two entry points for a fresh machine with Python 3.11+: `make demo` and `make test`.
# Each creates the virtualenv and installs pypgflow on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint typecheck unit docs audit chaos soak bench bench-peers screenshots clean

$(BIN)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("pypgflow needs Python 3.11 or newer: run make PYTHON=python3.11 ...") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

demo: $(BIN)/.installed
	$(BIN)/pypgflow demo

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(BIN)/.installed
	$(BIN)/mypy

# The whole suite: lint, strict type check, then every test (PostgreSQL tests need a server:
# see tests/conftest.py, or set PYPGFLOW_TEST_DATABASE_URL).
test: lint typecheck
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The documentation site (mkdocs.yml) in site/, warnings as errors: `make docs`, then open
# site/index.html (or `$(BIN)/mkdocs serve` while writing).
docs: $(BIN)/.installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# Known vulnerabilities in the installed dependencies (pip-audit). Fails only on a vulnerability
# found; says so plainly when pip-audit cannot reach its vulnerability service (.ci/audit.py).
# Arguments go to pip-audit: `make audit ARGS='-s osv'`.
audit: $(BIN)/.installed
	$(BIN)/python .ci/audit.py $(ARGS)

# The fault scenarios of RELIABILITY.md (tests/chaos), minutes each: workers killed, frozen and
# cut off, PostgreSQL restarted. They restart the local server (pg_ctlcluster): run them on a
# machine of your own. Figures are printed and written to chaos-report.md. Arguments go to
# pytest: `make chaos ARGS='-k storm'`; PYPGFLOW_CHAOS_RUNS sets the storm's runs (5000).
chaos: $(BIN)/.installed
	PYPGFLOW_CHAOS=1 PYPGFLOW_TEST_RESTART_DB=1 $(BIN)/python -m pytest tests/chaos -s -q $(ARGS)

# Half the measured capacity for SOAK_MINUTES (30): worker RSS, table sizes and latency at the
# start and the end, compared (bench/soak.py). `make soak SOAK_MINUTES=5 ARGS='--engine sqlite'`.
SOAK_MINUTES ?= 30
soak: $(BIN)/.installed
	$(BIN)/python bench/soak.py --minutes $(SOAK_MINUTES) $(ARGS)

# The dashboard's pages photographed by its browser tests, for the docs (docs/screenshots/).
screenshots: $(BIN)/.installed
	PYPGFLOW_SCREENSHOTS=docs/screenshots $(BIN)/python -m pytest tests/browser -q

bench: $(BIN)/.installed
	$(BIN)/python bench/executor_overhead.py

# pypgflow side by side with PgQueuer (bench/peers.py). PgQueuer is no dependency of pypgflow:
# it lives in a virtualenv of its own. Arguments go through ARGS, e.g.
# `make bench-peers ARGS=--quick` or `make bench-peers ARGS='--only 1,2 --repeat 5'`. PgQueuer runs
# on asyncpg, its default driver; ARGS='--pgqueuer-driver psycopg' measures its psycopg driver.
BENCH_VENV ?= .venv-bench
PGQUEUER ?= pgqueuer[asyncpg,psycopg]==1.6.0

$(BENCH_VENV)/bin/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("pypgflow needs Python 3.11 or newer: run make PYTHON=python3.11 ...") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet -e . '$(PGQUEUER)'
	@touch $@

bench-peers: $(BENCH_VENV)/bin/.installed
	$(BENCH_VENV)/bin/python bench/peers.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache site
