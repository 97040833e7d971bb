# Two commands do all the set-up: `make demo` and `make test`.
# Both create .venv from the pinned versions in requirements.lock on first use.
PYTHON ?= python3
PORT ?= 3000
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo serve test unit lint bench clean

# The lock pins everything: runtime, the demo extra (the MongoDB stand-in) and the dev extra (pytest, ruff, dg).
# The package is then installed with both extras and --no-index, so a requirement the lock misses fails here
# instead of being installed unpinned.
$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-index --no-build-isolation -e '.[demo,dev]'
	touch $(STAMP)

demo: $(STAMP)
	mkdir -p demo && cd demo && ../$(BIN)/mongodb-dlt demo

# Loads the sample data as `make demo` does, then serves it with `dagster dev` on http://127.0.0.1:$(PORT).
serve: $(STAMP)
	mkdir -p demo && cd demo && ../$(BIN)/mongodb-dlt demo --serve --port $(PORT)

# Everything: ruff, then the whole suite (mongodb_dlt_tests/unit, integration and e2e).
test: $(STAMP)
	$(BIN)/ruff check mongodb_dlt mongodb_dlt_tests benchmarks
	$(BIN)/pytest -q

# The fast tests only: ruff, then mongodb_dlt_tests/unit (in-process, no socket, no subprocess).
unit: $(STAMP)
	$(BIN)/ruff check mongodb_dlt mongodb_dlt_tests benchmarks
	$(BIN)/pytest -q mongodb_dlt_tests/unit

# arrow_throughput.py measures the client-side limit with pymongoarrow, which needs pyarrow 25 and cannot join
# .venv's pyarrow 26: it creates benchmarks/.limit-venv from benchmarks/limit-requirements.txt on first use.
bench: $(STAMP)
	$(BIN)/python benchmarks/definitions_load.py
	$(BIN)/python benchmarks/arrow_throughput.py

clean:
	rm -rf $(VENV) demo
