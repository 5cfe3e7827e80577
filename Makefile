# quicksilver: `make serve` and `make test` each create .venv and install what they need first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: serve test install-serve install-dev twin clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.serve: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[train,dev,postgres,replicas]'
	touch $@ $(VENV)/.serve

install-serve: $(VENV)/.serve
install-dev: $(VENV)/.dev

# The product: the HTTP server on the shipped model, on 127.0.0.1:8000.
serve: install-serve
	$(BIN)/quicksilver serve $(if $(PORT),--port $(PORT))

test: install-dev
	$(BIN)/python -m pytest -q

# The autoregressive twin for `quicksilver eval compare --twin runs/twin` (not in git: it is re-created here, ~50 min
# on a 2-core CPU): the shipped model turned causal, trained on as a fill-in-the-middle model on a corpus in its
# tokenization, exported as int8 ONNX alone. docs/history.md has what it measured.
twin: install-dev
	test -f data/corpus/train.bin || $(BIN)/quicksilver corpus --out data/corpus --tokenizer model/default/tokenizer.json
	$(BIN)/quicksilver train --corpus data/corpus --objective autoregressive --init-from model/default \
		--out runs/twin-ckpt --lr 3e-4 --warmup 20 --batch 8 --steps 733
	$(BIN)/quicksilver export runs/twin-ckpt --out runs/twin --precision int8 --no-weights

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
