# Two commands for a new user: `make run` and `make test`. Both install what they need.
# uv is bootstrapped into .tools/ with the machine's python; it never downloads a Python.
PYTHON ?= python3
UV_VERSION ?= 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(CURDIR)/$(VENV)

.PHONY: install run test test-faults bench bench-refresh bench-scheduler lint format browser clean help

help:
	@echo "make run   - start the whole system locally (embedded PostgreSQL + NATS, eBay sandbox, all services)"
	@echo "make test  - run the whole test suite"
	@echo "make lint  - ruff + mypy"
	@echo "make test-faults - the whole fault suite on real processes (docs/reliability.md)"
	@echo "make bench - every benchmark (docs/benchmarks.md); make bench-refresh ARGS=..."

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

$(VENV)/.installed: $(UV) uv.lock pyproject.toml $(wildcard libs/*/pyproject.toml services/*/pyproject.toml)
	$(UV) sync --frozen --python $(PYTHON)
	@touch $@

install: $(VENV)/.installed

run: install
	$(VENV)/bin/connector dev

# The browser test drives Debian's chromium; install it when we are allowed to.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the browser test"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	    echo "could not install chromium: the browser test will be skipped"; \
	  else echo "chromium not found and not root: the browser test will be skipped"; fi; }

test: install browser
	$(VENV)/bin/pytest

# Every fault scenario on 2,000 accounts; each prints one JSON line, the table goes to
# docs/reliability.md. (`make test` runs the scenarios marked smoke on 200 accounts.)
test-faults: install
	$(VENV)/bin/pytest tests/faults --fault-suite -p no:randomly -s -q

ARGS ?=
bench-refresh: install
	$(VENV)/bin/python -m bench.bench_refresh $(ARGS)

bench-scheduler: install
	$(VENV)/bin/python -m bench.bench_scheduler $(ARGS)

# Every benchmark; each prints one JSON line last and rewrites its section of docs/benchmarks.md.
bench: install
	$(VENV)/bin/python -m bench.bench_sandbox
	$(VENV)/bin/python -m bench.bench_refresh --accounts 2000 --refreshers 2 --latency-ms 20
	$(VENV)/bin/python -m bench.bench_refresh --accounts 2000 --refreshers 2 --latency-ms 0 --section refresh-no-latency
	$(VENV)/bin/python -m bench.bench_scheduler
	$(VENV)/bin/python -m bench.bench_api

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache
