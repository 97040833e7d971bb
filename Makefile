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

bench: $(STAMP)
	$(BIN)/python benchmarks/definitions_load.py

clean:
	rm -rf $(VENV) demo
