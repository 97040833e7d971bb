# Two commands do all the set-up: `make demo` and `make test`.
# Both create .venv from the pinned versions in requirements.lock on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo serve test lint bench clean

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	mkdir -p demo && cd demo && ../$(BIN)/mongodb-dlt demo

serve: $(STAMP)
	mkdir -p demo && cd demo && ../$(BIN)/mongodb-dlt demo --serve

test: $(STAMP)
	$(BIN)/ruff check mongodb_dlt mongodb_dlt_tests benchmarks
	$(BIN)/pytest -q

# pymongoarrow (the client-side limit we meant to compare with) needs pyarrow 25 and cannot join .venv's pyarrow 26:
# arrow_throughput.py measures the limit with bson + pyarrow + duckdb, all already in .venv.
bench: $(STAMP)
	$(BIN)/python benchmarks/definitions_load.py
	$(BIN)/python benchmarks/arrow_throughput.py

clean:
	rm -rf $(VENV) demo
