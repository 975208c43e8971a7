# One command each: `make demo` and `make test` set everything up from nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-slow lint bench clean web

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[train,serve,dev,cluster]"
	# face alignment's MTCNN weights (MIT): only the wheel's three weight files are read;
	# --no-deps, as it pins an old torch and torchvision this project does not use
	$(BIN)/python -m pip install --quiet --no-deps "facenet-pytorch==2.6.0"
	$(BIN)/python -m deepobfuscator.deploy.web_assets --optional  # the page's onnxruntime-web (npm)
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/deepobfuscator demo --out runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q
	$(BIN)/ruff check .
	$(BIN)/mypy

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

web: $(STAMP)
	$(BIN)/python -m deepobfuscator.deploy.web_assets

bench: $(STAMP)
	$(BIN)/python benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
