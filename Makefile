# quicksilver: `make serve` and `make test` each create .venv and install what they need first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: serve test install-serve install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.serve: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[train,dev]'
	touch $@ $(VENV)/.serve

install-serve: $(VENV)/.serve
install-dev: $(VENV)/.dev

# The product: the HTTP server on the shipped model, on 127.0.0.1:8000.
serve: install-serve
	$(BIN)/quicksilver serve

test: install-dev
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
