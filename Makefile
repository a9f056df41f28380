# Developer commands. `make setup` installs everything into .venv; `make test` runs
# lint, type checks and the whole test suite (setting up first if needed).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test lint unit gui e2e run clean system-deps bundle

setup: system-deps $(STAMP)

# Qt's X11/EGL libraries and Xvfb (Debian/Ubuntu; installs only what is missing).
system-deps:
	bash tools/system-deps.sh

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

lint: setup
	$(BIN)/ruff check clipdesk tests bench tools packaging/*.py
	$(BIN)/ruff format --check clipdesk tests bench tools packaging/*.py
	$(BIN)/mypy
	$(BIN)/mypy packaging/build.py packaging/cpu_check.py
	$(BIN)/lint-imports

# The whole suite; it builds the CPU bundle first (which runs the bundle's own self-test),
# so that tests/e2e/test_bundle.py can start it under Xvfb.
test: lint bundle
	$(BIN)/python -m pytest

# The small CPU bundle without torch: dist/clipdesk/ and, on Linux, dist/clipdesk-*.tar.gz.
bundle: setup
	$(BIN)/python packaging/build.py

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

gui: setup
	$(BIN)/python -m pytest tests/gui

e2e: setup
	$(BIN)/python -m pytest tests/e2e

run: setup
	$(BIN)/clipdesk

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
