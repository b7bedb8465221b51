# The two commands of the README. Both set everything up from nothing (scripts/bootstrap.sh is idempotent).
.PHONY: quickstart test setup lint

setup:
	@bash scripts/bootstrap.sh

quickstart: setup
	@HF_HUB_OFFLINE=1 .venv/bin/w2s run quickstart

test: setup
	@bash scripts/test.sh

lint: setup
	@.venv/bin/ruff check w2s tests
