# One command per chore.
PY ?= python3
# Docker's compose plugin, else the standalone docker-compose (Debian's package)
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo 'docker compose' || echo docker-compose)

.PHONY: install serve fmt check test e2e fuzz up up-gpu deploy-check bench-prepare

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
	$(COMPOSE) -f deploy/compose.yaml up --build

up-gpu:
	$(COMPOSE) -f deploy/compose.yaml -f deploy/compose.gpu.yaml up --build

deploy-check:
	bash deploy/check.sh

bench-prepare:
	bash benchmarks/prepare.sh
