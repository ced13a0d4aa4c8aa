# Two commands for a new user: `make run` and `make test`. Both install what they need.
# uv is bootstrapped into .tools/ with the machine's python; it never downloads a Python.
PYTHON ?= python3
UV_VERSION ?= 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(CURDIR)/$(VENV)

.PHONY: install run test test-faults bench bench-api bench-refresh bench-scheduler bench-spans \
	bench-rotate lint format \
	browser promtool asyncapi screenshots fuzz clean help

help:
	@echo "make run   - start the whole system locally (embedded PostgreSQL + NATS, eBay sandbox, all services)"
	@echo "make test  - run the whole test suite"
	@echo "make lint  - ruff + mypy"
	@echo "make test-faults - the whole fault suite on real processes (docs/reliability.md)"
	@echo "make bench - every benchmark (docs/benchmarks.md); make bench-refresh ARGS=..."
	@echo "make screenshots - pictures of the admin console for docs/ (needs a running make run)"
	@echo "make fuzz  - a long schemathesis run against the API (FUZZ_CASES=20000)"
	@echo "make bench-api - the API's read path under load vs a bare route; make bench-api ARGS=..."
	@echo "make bench-rotate - how fast connector keys rotate re-encrypts 100,000 token rows"
	@echo "make bench-spans - what an exported span costs, and the outbox relay with publish spans"

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

$(VENV)/.installed: $(UV) uv.lock pyproject.toml $(wildcard libs/*/pyproject.toml services/*/pyproject.toml)
	$(UV) sync --frozen --python $(PYTHON)
	@touch $@

install: $(VENV)/.installed

# The API's port (the other servers pick free ports): `make run API_PORT=8123`.
API_PORT ?= 8000
run: install
	$(VENV)/bin/connector dev --api-port $(API_PORT)

# The browser test drives Debian's chromium; install it when we are allowed to.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the browser test"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	    echo "could not install chromium: the browser test will be skipped"; \
	  else echo "chromium not found and not root: the browser test will be skipped"; fi; }

# promtool checks the alert rules in deploy/observability: taken from Debian's prometheus package
# (downloaded and unpacked into .tools; nothing is installed or started). Without it the test
# falls back to a schema check of the rules.
PROMTOOL := $(TOOLS)/bin/promtool
promtool: $(UV)
	@test -x $(PROMTOOL) || { \
	  if command -v apt-get >/dev/null 2>&1 && command -v dpkg >/dev/null 2>&1; then \
	    tmp=$$(mktemp -d); \
	    ( cd $$tmp && { apt-get download -qq prometheus >/dev/null 2>&1 || \
	      { apt-get update -qq >/dev/null 2>&1 && apt-get download -qq prometheus >/dev/null 2>&1; }; } ) && \
	    dpkg -x $$tmp/prometheus_*.deb $$tmp/root && cp $$tmp/root/usr/bin/promtool $(PROMTOOL); \
	    rm -rf $$tmp; \
	  fi; \
	  test -x $(PROMTOOL) || echo "promtool is not available: the alert rules get a schema check only"; }

# Two workers (one per core of the machines we test on): most tests wait on real processes,
# servers and deadlines, so the suite's wall time falls well below its CPU time. A file's tests
# stay on one worker (module fixtures); every worker has its own PostgreSQL, NATS and sandbox.
TEST_WORKERS ?= 2
test: install browser promtool
	$(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadfile

# The AsyncAPI document of every NATS subject, generated from the typed models.
asyncapi: install
	$(VENV)/bin/python -m connector_common.asyncapi docs/asyncapi.yaml

# Screenshots of the admin console and an account page (1400 px and 390 px wide) into
# docs/screenshots/, from a `make run` running in another terminal. SCREENSHOTS_URL if its API
# is not on port 8000 (or give the same API_PORT as to make run).
SCREENSHOTS_URL ?= http://127.0.0.1:$(API_PORT)
screenshots: install browser
	$(VENV)/bin/python -m scripts.screenshots --url $(SCREENSHOTS_URL)

# The bounded run (about 1,000 cases) is part of make test; this one searches longer, with new
# random cases each time.
FUZZ_CASES ?= 20000
fuzz: install
	CONNECTOR_FUZZ_CASES=$(FUZZ_CASES) $(VENV)/bin/pytest tests/api/test_fuzz.py -q -p no:randomly --timeout=3600

bench-rotate: install
	$(VENV)/bin/python -m bench.bench_rotate

# Every fault scenario on 2,000 accounts; each prints one JSON line, the table goes to
# docs/reliability.md. (`make test` runs the scenarios marked smoke on 200 accounts.)
test-faults: install
	$(VENV)/bin/pytest tests/faults --fault-suite -p no:randomly -s -q

ARGS ?=
bench-refresh: install
	$(VENV)/bin/python -m bench.bench_refresh $(ARGS)

bench-scheduler: install
	$(VENV)/bin/python -m bench.bench_scheduler $(ARGS)

bench-spans: install
	$(VENV)/bin/python -m bench.bench_spans $(ARGS)

# The API's read path under an open-loop load, side by side with a bare FastAPI route:
# make bench-api ARGS="--rps 200 --seconds 20 --accounts 1000"
bench-api: install
	$(VENV)/bin/python -m bench.bench_api_load $(ARGS)

# Every benchmark; each prints one JSON line last and rewrites its section of docs/benchmarks.md.
bench: install
	$(VENV)/bin/python -m bench.bench_sandbox
	$(VENV)/bin/python -m bench.bench_refresh --accounts 2000 --refreshers 2 --latency-ms 20
	$(VENV)/bin/python -m bench.bench_refresh --accounts 2000 --refreshers 2 --latency-ms 0 --section refresh-no-latency
	$(VENV)/bin/python -m bench.bench_scheduler
	$(VENV)/bin/python -m bench.bench_spans
	$(VENV)/bin/python -m bench.bench_api
	$(VENV)/bin/python -m bench.bench_api_load
	$(VENV)/bin/python -m bench.bench_rotate

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache
