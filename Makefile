# Two commands get a newcomer going: `make run` and `make test`. Everything lands in .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PG_TEST_URL ?= postgresql://postgres@127.0.0.1:5432/contactbase_test
REDIS_TEST_URL ?= redis://127.0.0.1:6379/15
PG_FUZZ_URL ?= postgresql://postgres@127.0.0.1:5432/contactbase_fuzz
INSTALLED := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
# Where a client on this machine reaches the server (0.0.0.0 listens everywhere, 127.0.0.1 too).
DEMO_HOST = $(if $(filter 0.0.0.0,$(HOST)),127.0.0.1,$(HOST))

.PHONY: install run test test-sqlite test-postgres lint format clean bench-limiter bench-export bench-list-memory bench-floor fuzz faults faults-ci bench bench-quick chromium test-browser openapi-check

$(INSTALLED): pyproject.toml constraints.txt
	@echo "Installing contactbase and its pinned dependencies into $(VENV) ..."
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
	@touch $@

install: $(INSTALLED)

## Serve on 127.0.0.1:8000 (make run PORT=8080 HOST=0.0.0.0) with the embedded SQLite database; prints a demo key and a curl line.
run: install
	$(BIN)/contactbase migrate
	$(BIN)/contactbase demo --url http://$(DEMO_HOST):$(PORT)
	$(BIN)/contactbase serve --host $(HOST) --port $(PORT)

## Lint and type-check, then the whole suite on SQLite and on PostgreSQL + Redis.
test: lint test-sqlite test-postgres

test-sqlite: install
	@echo "== tests on SQLite =="
	$(BIN)/pytest

test-postgres: install
	@echo "== tests on PostgreSQL ($(PG_TEST_URL)) and Redis ($(REDIS_TEST_URL)) =="
	CONTACTBASE_TEST_DATABASE_URL=$(PG_TEST_URL) CONTACTBASE_TEST_REDIS_URL=$(REDIS_TEST_URL) \
		$(BIN)/pytest

## Debian's chromium, which the docs pages' browser test drives (Playwright's own download cannot run here).
chromium:
	@command -v chromium >/dev/null || { \
		echo "Installing Debian's chromium ..."; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; }

## /docs and /redoc in headless chromium against a real server, with no network (installs chromium first).
test-browser: install chromium
	$(BIN)/pytest tests/test_docs_browser.py

lint: install
	$(BIN)/ruff check src tests bench reliability scripts
	$(BIN)/ruff format --check src tests bench reliability scripts
	$(BIN)/mypy

## Every scenario under wrk beside the pgbench ceiling; writes bench/results/latest.json.
bench: install
	$(BIN)/python bench/run.py

## Shorter runs of create, get, re-send, the cold start and SQLite; the same output file.
bench-quick: install
	$(BIN)/python bench/run.py --quick

## After `make bench`: the app, a bare ASGI app doing the least a create and a get need, and the ceiling, in rounds.
bench-floor: install
	$(BIN)/python bench/floor.py

## Create throughput with the Redis limiter vs in-process counting, side by side (PostgreSQL).
bench-limiter: install
	$(BIN)/python bench/limiter.py

## Peak memory of an export of 100,000 contacts against the idle process (PostgreSQL).
bench-export: install
	$(BIN)/python bench/export_memory.py

## Peak memory of one served worker under 15 slow list requests at once, full custom fields (PostgreSQL).
bench-list-memory: install
	$(BIN)/python bench/list_memory.py

## Schemathesis against the app's own OpenAPI document, on SQLite then PostgreSQL; longer than the bounded run in `make test`.
fuzz: install
	$(BIN)/python reliability/fuzz.py
	$(BIN)/python reliability/fuzz.py --postgres $(PG_FUZZ_URL)

## The OpenAPI document as client generators meet it: Redocly's lint, openapi-python-client, every operation through the generated client against a real server (needs Node.js's npx).
openapi-check: install
	$(BIN)/python scripts/openapi_check.py

## Fault injection against a PostgreSQL of its own: kills, restarts; then checks nothing was lost.
faults: install
	$(BIN)/python reliability/faults.py

## One round of each fault (about a minute): what .ci/run runs after the suite.
faults-ci: install
	$(BIN)/python reliability/faults.py --rounds 1

format: install
	$(BIN)/ruff check --fix src tests
	$(BIN)/ruff format src tests

clean:
	rm -rf $(VENV) contactbase.db contactbase.db-* .contactbase-demo-key
