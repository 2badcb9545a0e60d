# One command each, on a fresh machine with Python 3.11, pip and make:
#   make experiment   set up .venv and run the weight-decay experiment (the main job)
#   make test         set up .venv and run the tests on the newest supported TensorFlow
#   make test-oldest  the same on the oldest supported TensorFlow (.venv-tf2.15)
#   make test-fast    the tests not marked slow (no subprocesses or clusters)
#   make lint         ruff and mypy over safetrain/ (requirements/lint.txt)
#   make ci           lint and both test runs, as .ci/run does
PYTHON ?= python3.11
TF ?= 2.21
VENV ?= .venv
PYTEST_ARGS ?=

BIN := $(VENV)/bin

.PHONY: venv test test-fast test-oldest lint ci experiment benchmarks clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements/tf-$(TF).txt setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements/tf-$(TF).txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

test: venv
	$(BIN)/python -m pytest tests $(PYTEST_ARGS)

test-fast: venv
	$(BIN)/python -m pytest tests -m "not slow" $(PYTEST_ARGS)

test-oldest:
	$(MAKE) test TF=2.15 VENV=.venv-tf2.15

$(VENV)/.lint-installed: $(VENV)/.installed requirements/lint.txt
	$(BIN)/python -m pip install --quiet -r requirements/lint.txt
	touch $@

lint: $(VENV)/.lint-installed
	$(BIN)/ruff check safetrain
	$(BIN)/mypy

ci: lint test test-oldest

experiment: venv
	$(BIN)/python examples/weight_decay_experiment.py

benchmarks: venv
	$(BIN)/python benchmarks/check_overhead.py
	$(BIN)/python benchmarks/audit_scale.py

clean:
	rm -rf .venv .venv-tf2.15 build *.egg-info
