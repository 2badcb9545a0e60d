# One command each, on a fresh machine with Python 3.11, pip and make:
#   make experiment   set up .venv and run the weight-decay experiment (the main job)
#   make test         set up .venv and run the tests on the newest supported TensorFlow
#   make test-oldest  the same on the oldest supported TensorFlow (.venv-tf2.15)
#   make test-fast    the tests not marked slow (no subprocesses or clusters)
#   make lint         ruff and mypy over safetrain/ (requirements/lint.txt)
#   make docs         build the documentation site, strict (requirements/docs.txt),
#                     into a temporary directory (DOCS_SITE=dir keeps it)
#   make docs-test    run every code block of the README, CONTRIBUTING and docs/
#   make test-wheel   build the sdist and wheel, install the wheel with the
#                     tensorflow extra into a fresh .venv-wheel, and check the
#                     installed command there (tests/command_test.py)
#   make test-matrix  the library's tests on every lane (TF 2.15-2.21 x Python
#                     3.10-3.13 where TensorFlow has wheels); each lane
#                     writes requirements/results/<lane>.txt
#   make test-lane LANE=tf2.18-py3.12   one lane's library tests
#   make ci           what .ci/run does: lint, docs, the full suite on the newest
#                     TF, the wheel, the suite on the oldest TF, library tests
#                     on a covering subset of lanes
# A lane installs requirements/lanes/<lane>.txt with --no-deps: every package
# is pinned there, TensorFlow as tensorflow-cpu only (see .ci/matrix.py).
SHELL := /bin/bash
TF ?= 2.21
PY ?= 3.11
LANE ?= tf$(TF)-py$(PY)
VENV ?= .venv
PYTEST_ARGS ?=
# Test processes (pytest-xdist): one per core. Each test builds its own
# graphs, so they spread; XDIST= runs them in one process.
XDIST ?= -n auto
# pyenv (as on this project's machines) finds python3.X only for the versions
# it is told to use: offer it the default one first (so `python3` stays what
# it was), then every installed 3.10 and later. Harmless without pyenv.
export PYENV_VERSION ?= $(shell (pyenv version-name; pyenv versions --bare) \
	2>/dev/null | grep -E '^3\.1[0-9]+\.[0-9]+$$' | awk '!seen[$$0]++' | \
	tr '\n' ':' | sed 's/:$$//')
PYTHON ?= python$(PY)
# The library's own tests: not the slow subprocess and cluster tests, nor the
# example programs'.
LIBRARY_TESTS ?= tests -m "not slow" --ignore-glob="tests/examples_*"

BIN := $(VENV)/bin

.PHONY: venv test test-fast test-oldest lint docs docs-test test-lane \
	test-matrix test-wheel ci ci-lanes experiment benchmarks clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements/lanes/$(LANE).txt setup.cfg
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-deps -r requirements/lanes/$(LANE).txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

test: venv
	$(BIN)/python -m pytest tests $(XDIST) $(PYTEST_ARGS)

test-fast: venv
	$(BIN)/python -m pytest tests -m "not slow" $(XDIST) $(PYTEST_ARGS)

test-oldest:
	$(MAKE) test TF=2.15 VENV=.venv-tf2.15

$(VENV)/.lint-installed: $(VENV)/.installed requirements/lint.txt
	$(BIN)/python -m pip install --quiet -r requirements/lint.txt
	touch $@

lint: $(VENV)/.lint-installed
	$(BIN)/ruff check safetrain
	$(BIN)/mypy

$(VENV)/.docs-installed: $(VENV)/.installed requirements/docs.txt
	$(BIN)/python -m pip install --quiet -r requirements/docs.txt
	touch $@

# The site, strict: a broken link or reference fails the build. Built into a
# temporary directory that is removed after, unless DOCS_SITE names one.
DOCS_SITE ?=
docs: $(VENV)/.docs-installed
	@site="$(DOCS_SITE)"; [ -n "$$site" ] || site=$$(mktemp -d); \
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir "$$site" \
		|| { rm -rf "$$site"; exit 1; }; \
	if [ -n "$(DOCS_SITE)" ]; then echo "site: $$site"; else rm -rf "$$site"; fi

docs-test: venv
	$(BIN)/python -m pytest tests/docs_test.py $(PYTEST_ARGS)

$(VENV)/.build-installed: $(VENV)/.installed requirements/build.txt
	$(BIN)/python -m pip install --quiet -r requirements/build.txt
	touch $@

# The package as a user installs it: the sdist and, built from it, the
# wheel (into DIST); the wheel with the tensorflow extra (the CUDA build,
# the noisiest at start-up) into a fresh WHEEL_VENV; then the installed
# command's checks run against it (quiet --help, one stderr line for each
# exit 2, the audit of graphs the tests write, run --on_missing=add).
WHEEL_VENV ?= .venv-wheel
DIST ?= dist
test-wheel: $(VENV)/.build-installed
	rm -rf $(DIST) $(WHEEL_VENV)
	$(BIN)/python -m build --outdir $(DIST) .
	$(PYTHON) -m venv $(WHEEL_VENV)
	$(WHEEL_VENV)/bin/python -m pip install --quiet \
		"$$(ls $(DIST)/safetrain-*.whl)[tensorflow]"
	SAFETRAIN_COMMAND="$(abspath $(WHEEL_VENV))/bin/safetrain" \
		$(BIN)/python -m pytest tests/command_test.py $(XDIST) $(PYTEST_ARGS)

# One lane's library tests; the summary line goes to requirements/results.
test-lane:
	$(MAKE) venv PYTHON=python$(word 2,$(subst -py, ,$(LANE))) LANE=$(LANE) VENV=.venv-$(LANE)
	.venv-$(LANE)/bin/python -m pytest $(LIBRARY_TESTS) $(XDIST) $(PYTEST_ARGS) \
		| tee .venv-$(LANE)/pytest.log; test $${PIPESTATUS[0]} -eq 0
	python3 .ci/matrix.py record $(LANE) library .venv-$(LANE)/pytest.log
	python3 .ci/matrix.py write-readme

test-matrix:
	set -e; for lane in $$(python3 .ci/matrix.py lanes); do \
		$(MAKE) test-lane LANE=$$lane; done
	python3 .ci/matrix.py write-readme

# The covering subset CI runs besides the two full suites.
ci-lanes:
	set -e; for lane in $$(python3 .ci/matrix.py lanes --ci-library); do \
		$(MAKE) test-lane LANE=$$lane; done

ci: lint docs test test-wheel test-oldest ci-lanes

experiment: venv
	$(BIN)/python examples/weight_decay_experiment.py

benchmarks: venv
	$(BIN)/python benchmarks/check_overhead.py
	$(BIN)/python benchmarks/audit_scale.py

clean:
	rm -rf .venv .venv-tf2.15 .venv-tf*-py* .venv-wheel build dist *.egg-info
