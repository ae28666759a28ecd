# clinibox — the two commands a newcomer needs are `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
EXTRAS ?= dev,convert,openvino,tflite,central

.PHONY: install run test lint bench demo-model clean

# Idempotent bootstrap: re-installs only when pyproject.toml changes.
install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

# Start the appliance on its embedded defaults (state under ./var, DICOM on
# 11112, USB/folder import under ./var/import) with the bundled demo model.
run: install
	$(BIN)/clinibox serve $(if $(CONFIG),--config $(CONFIG),)

test: install
	$(BIN)/python -m ruff check .
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: install
	$(BIN)/python -m ruff check .

bench: install
	$(BIN)/python bench/run_all.py

# rebuild the phantom demo package with the converter pipeline (~12 min on 2 cores)
demo-model: install
	$(BIN)/python -m converters.train_demo

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
