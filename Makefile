# fedledger: one gate (`make check`) and the newcomer's two commands (`make demo`, `make check`).
VENV   ?= .venv
PYTHON ?= python3
PY      = $(VENV)/bin/python
BIN     = $(VENV)/bin
CORE    = node consensus ledger storage fl
# pytest workers: the suite is mostly CPU-bound; 2 matches the CI machines
WORKERS ?= 2

.PHONY: install demo test lint typecheck check bench bench-round clean

install: $(VENV)/.installed

# torch first, pinned: a CPU wheel of 2.13.0 lies on the build machines' disk, while a bare
# `torch` would download a multi-GB CUDA build. Elsewhere pip fetches 2.13.0 from PyPI.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

demo: install
	$(BIN)/fedledger demo

# Two phases: unit and in-process tests in parallel, then the tests that start OS processes
# (testnets, end-to-end FL) one at a time - two testnets at once overload a 2-core machine.
test: install
	$(PY) -m pytest -q -m "not slow and not integration" -n $(WORKERS)
	$(PY) -m pytest -q -m "integration and not slow" -n 0 --durations=15

lint: install
	$(BIN)/ruff check .

typecheck: install
	$(BIN)/mypy $(CORE)

check: lint typecheck test

bench: install
	$(PY) -m benchmarks.gossip

# the chain's overhead per FL round against the in-process harness (a few minutes; starts
# 8 node processes). Results and the other benchmarks' commands: docs/BENCHMARKS.md
bench-round: install
	$(PY) -m benchmarks.round_overhead $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
