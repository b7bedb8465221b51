# The two commands of the README. Both set everything up from nothing (scripts/bootstrap.sh is idempotent).
.PHONY: quickstart test check setup lint

setup:
	@bash scripts/bootstrap.sh

quickstart: setup
	@HF_HUB_OFFLINE=1 .venv/bin/w2s run quickstart

test: setup
	@bash scripts/test.sh all

# The fast tier: what a change to one module is checked with before the whole suite (see the README).
check: setup
	@bash scripts/test.sh check

lint: setup
	@.venv/bin/ruff check w2s tests
