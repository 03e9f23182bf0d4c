# One command per chore.
PY ?= python3

.PHONY: install serve fmt check test e2e fuzz up bench-prepare

install:
	$(PY) -m pip install -e ".[test]"

serve:
	llm-gateway serve

fmt:
	$(PY) -m ruff format gateway batching tests benchmarks
	$(PY) -m ruff check --fix gateway batching tests benchmarks

check:
	$(PY) -m ruff format --check gateway batching tests benchmarks
	$(PY) -m ruff check gateway batching tests benchmarks
	$(PY) -m mypy

test:
	$(PY) -m pytest

e2e:
	$(PY) -m pytest -m model tests/e2e

fuzz:
	bash .ci/fuzz-api

up:
	docker compose -f deploy/compose.yaml up --build

bench-prepare:
	bash benchmarks/prepare.sh
