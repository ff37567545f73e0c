# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RAY_STAMP := $(VENV)/.installed-ray

.PHONY: run test lint bench checkpoints clean

# The pins live in pyproject.toml only; the project itself is installed editable, with the dev extra.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The app runs without Ray; the suite exercises the Ray executor and sharding, so it adds the extra.
$(RAY_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[dev,ray]"
	touch $(RAY_STAMP)

run: $(STAMP)
	$(PY) -m streamlit run app.py

# --dist loadgroup: tests marked xdist_group("ray") share one worker, so one Ray cluster runs at a time
test: lint
	$(PY) -m pytest -n 2 --dist loadgroup -q --durations=15

# mypy reads Ray's own type hints (it ships py.typed), so lint checks with the extra installed
lint: $(RAY_STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy

bench: $(STAMP)
	$(PY) benchmarks/bench_costs.py
	$(PY) benchmarks/bench_train.py

RECIPE := --epochs 40 --batch-size 32
# 1-D nets on MNIST-1D (issue 13): one recipe for all of them, so the plain-vs-residual gap is the
# shortcuts' alone; one thread, as they were trained (deterministic for a given thread count)
RECIPE_1D := --epochs 30 --batch-size 64 --lr 0.1
checkpoints: $(STAMP)
	$(PY) -m analysis train --model cifar_resnet20 $(RECIPE) --out checkpoints/digits_resnet20.pt
	$(PY) -m analysis train --model cifar_resnet20 --plain $(RECIPE) --out checkpoints/digits_plain20.pt
	$(PY) -m analysis train --model cifar_resnet56 $(RECIPE) --lr 0.05 --out checkpoints/digits_resnet56.pt
	$(PY) -m analysis train --model cifar_resnet56 --plain $(RECIPE) --lr 0.05 --out checkpoints/digits_plain56.pt
	OMP_NUM_THREADS=1 $(PY) -m analysis train --data mnist1d --model resnet1d_20 $(RECIPE_1D) --out checkpoints/mnist1d_resnet20.pt
	OMP_NUM_THREADS=1 $(PY) -m analysis train --data mnist1d --model resnet1d_20 --plain $(RECIPE_1D) --out checkpoints/mnist1d_plain20.pt
	OMP_NUM_THREADS=1 $(PY) -m analysis train --data mnist1d --model resnet1d_56 $(RECIPE_1D) --out checkpoints/mnist1d_resnet56.pt
	OMP_NUM_THREADS=1 $(PY) -m analysis train --data mnist1d --model resnet1d_56 --plain $(RECIPE_1D) --out checkpoints/mnist1d_plain56.pt
	# the transfer-learning source (digits 0-4; kept apart so the pages' shipped nets stay the digits and MNIST-1D pairs)
	$(PY) -m analysis train --model cifar_resnet20 --classes 0,1,2,3,4 --epochs 30 --batch-size 32 --out checkpoints/transfer/digits04_resnet20.pt
	OMP_NUM_THREADS=1 $(PY) -m analysis train --data mnist1d --model resnet1d_20 --classes 0,1,2,3,4 $(RECIPE_1D) --out checkpoints/transfer/mnist1d04_resnet1d20.pt
	# the shipped transformers (torch.export programs, one thread each; checkpoints/README.md)
	$(PY) tools/make_transformers.py
	# the Lesion lab's stored sweeps of the transformers belong to these programs: remake them with them
	$(PY) tools/make_lesion_results.py
	# the Path ensemble's stored measurements belong to these weights: remake them with the nets
	$(PY) tools/make_path_results.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .hypothesis *.egg-info
