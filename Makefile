# The two set-up commands: `make demo` and `make test`. Both install what is missing first.
SHELL := /bin/bash
PY := .venv/bin/python

.PHONY: setup demo test test-fast lint bench fuzz clean

setup:
	@scripts/bootstrap.sh

demo: setup
	@scripts/demo.sh

# No `|| true` nor `-` here: pytest's exit code 5 (no test collected) must fail the run.
test: setup
	$(PY) -m pytest -n 2 --dist loadgroup -q tests

test-fast: setup
	$(PY) -m pytest -n 2 -q -m "not slow and not interop" tests

lint: setup
	.venv/bin/ruff check src tests bench fuzz
	.venv/bin/ruff format --check src tests bench fuzz
	.venv/bin/mypy
	.venv/bin/lint-imports

bench: setup
	$(PY) -m bench

# Every fuzz target for FUZZ_RUNS executions (default 1,000,000), one at a time
# (FUZZ_JOBS=2 for two); findings land in fuzz/findings/<target>/.
fuzz: setup
	nice -n 10 $(PY) -m fuzz --runs $${FUZZ_RUNS:-1000000}

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache build dist
