# The two quick-start commands: `make demo` and `make test`. Each sets up .venv itself on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint fmt clean

$(STAMP): pyproject.toml emulators/pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]' -e ./emulators
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/geocatalog-worker demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n 4 --dist loadgroup --durations=20 $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo 'pytest collected no tests'; exit 0; fi; exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache build dist *.egg-info
