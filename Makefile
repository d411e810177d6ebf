# countstream: `make run` sets everything up and runs the app; `make test` runs the tests
# (`make test-fast`: those that need no Kafka or Redis).
SHELL := /bin/bash
PY := .venv/bin/python
MANAGE := $(PY) manage.py

.PHONY: run test test-fast setup services services-stop services-status prepare migrate topics seed \
        bench lint chaos

run: prepare seed
	@echo "countstream: web on http://127.0.0.1:8000/ (admin at /admin/); Ctrl-C stops all"
	PATH="$(CURDIR)/.venv/bin:$$PATH" .venv/bin/honcho start -f Procfile

test: setup services
	$(PY) -m pytest

# The edit-test loop: the tests that need PostgreSQL at most (not marked `stack`).
test-fast: setup
	@python3 scripts/services.py start postgres
	$(PY) -m pytest -q -m "not stack"

setup:
	@scripts/bootstrap.sh

services: setup
	@python3 scripts/services.py start

services-stop:
	@python3 scripts/services.py stop

services-status:
	@python3 scripts/services.py status

prepare: services migrate topics

migrate:
	$(MANAGE) migrate --no-input

topics:
	$(MANAGE) kafka_topics ensure

seed:
	$(MANAGE) seed_demo

bench: services  # each benchmark makes its own database and topics (bench/common.py)
	$(PY) bench/run.py

# A soak: the fault scenarios CHAOS_ROUNDS times (default 5), stopping at the first failure.
# Each round appends its figures to .local/reliability-figures.jsonl (docs/reliability.md).
chaos: setup services
	@for round in $$(seq $${CHAOS_ROUNDS:-5}); do \
	  echo "chaos: round $$round of $${CHAOS_ROUNDS:-5}"; \
	  TEST_DATABASE_NAME=test_countstream_chaos $(PY) -m pytest -q -s -p no:cacheprovider \
	    tests/system/test_reliability_pipeline.py tests/system/test_reliability_kafka.py \
	    tests/system/test_reliability_stores.py || exit 1; \
	done

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
