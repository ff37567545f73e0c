# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint bench checkpoints clean

# The pins live in pyproject.toml only; the project itself is installed editable, with the dev extra.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m streamlit run app.py

test: lint
	$(PY) -m pytest -n 2 -q

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy

bench: $(STAMP)
	$(PY) benchmarks/bench_costs.py
	$(PY) benchmarks/bench_train.py

RECIPE := --epochs 40 --batch-size 32
checkpoints: $(STAMP)
	$(PY) -m analysis train --model cifar_resnet20 $(RECIPE) --out checkpoints/digits_resnet20.pt
	$(PY) -m analysis train --model cifar_resnet20 --plain $(RECIPE) --out checkpoints/digits_plain20.pt
	$(PY) -m analysis train --model cifar_resnet56 $(RECIPE) --lr 0.05 --out checkpoints/digits_resnet56.pt
	$(PY) -m analysis train --model cifar_resnet56 --plain $(RECIPE) --lr 0.05 --out checkpoints/digits_plain56.pt

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .hypothesis *.egg-info
